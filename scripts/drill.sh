#!/usr/bin/env bash
# The README's main job: a sandbox recovery drill on throwaway data and a local-disk tier.
# Back up, break (delete the tree), restore, verify, report what it did and how long it took.
#
#   bash scripts/drill.sh                          # builds zdr (release) and drills
#   ZDR_BIN=target/debug/zdr bash scripts/drill.sh # no build: drill with this binary
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n ${ZDR_BIN:-} ]]; then
    bin=$(realpath "$ZDR_BIN")
    # zdr reads ZDR_* variables as config overrides: keep the binary's path out of them.
    unset ZDR_BIN
    exec "$bin" drill --sandbox "$@"
fi
cargo run --release --locked -q -p zdr-cli -- drill --sandbox "$@"
