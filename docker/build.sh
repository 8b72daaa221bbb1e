#!/usr/bin/env bash
# Builds a statically linked, stripped gregor and the FROM-scratch image gregor:dev from it.
# GREGOR_IMAGE overrides the tag.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
image=${GREGOR_IMAGE:-gregor:dev}
# The image's binary keeps no debug info and no symbols (the release profile keeps line
# tables for profiling the native build).
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --bin gregor --target "$target"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "target/$target/release/gregor" "$ctx/gregor"
mkdir "$ctx/data"
cp docker/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "built image $image: $((size / 1000000)) MB ($(du -h "$ctx/gregor" | cut -f1) static binary)"
