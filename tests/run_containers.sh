#!/usr/bin/env bash
# The container suite (tests/containers.rs, issue 13): the image, docker/compose.yaml and the
# fault tests against three gregor containers, two tests at a time. Needs docker and the image
# gregor:dev (docker/build.sh; tests/run_all.sh builds it first). Prints the fault table the
# tests kept (fault x acknowledged, lost, duplicated, reordered, stall), which
# docs/RELIABILITY.md keeps the latest of.
set -uo pipefail
cd "$(dirname "$0")/.."
table=target/tmp/fault-table
rm -rf "$table"
cargo test --test containers -- --ignored --test-threads=2
rc=$?
echo
echo "fault table (tests/containers.rs):"
echo "| fault | acknowledged | lost | duplicated | reordered | failed sends | commits backwards | producers stalled (s) | test (s) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
cat "$table"/*.md 2>/dev/null
exit $rc
