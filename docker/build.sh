#!/usr/bin/env bash
# Builds a statically linked gregor and the FROM-scratch image gregor:dev from it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --bin gregor --target "$target"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "target/$target/release/gregor" "$ctx/gregor"
cp docker/Dockerfile "$ctx/Dockerfile"
docker build -q -t gregor:dev "$ctx"
echo "built image gregor:dev ($(du -h "$ctx/gregor" | cut -f1) binary)"
