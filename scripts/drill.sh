#!/usr/bin/env bash
# The README's main job: a sandbox recovery drill on throwaway data and a local-disk tier.
# Back up, break (delete the tree), restore, verify, report what it did and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -q -p zdr-cli -- drill --sandbox "$@"
