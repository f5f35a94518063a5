#!/usr/bin/env bash
# The README's test command: installs what the tests need (standard decoders, SeaweedFS for
# the real S3 server), builds the test container images (scripts/build-test-images.sh; cached
# by content), then runs the whole workspace's tests. Each suite starts its own
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
# The container images of the Docker tests (zdr-docker) build while the tests compile.
images_log=$(mktemp "${TMPDIR:-/tmp}/zdr-test-images.XXXXXX.log")
bash scripts/build-test-images.sh >"$images_log" 2>&1 &
images_pid=$!
if ! cargo test --workspace --locked --no-run "$@"; then
    wait "$images_pid" || true
    exit 1
fi
if ! wait "$images_pid"; then
    cat "$images_log" >&2
    echo "test.sh: scripts/build-test-images.sh failed" >&2
    exit 1
fi
cat "$images_log"
rm -f "$images_log"
# With cargo-nextest installed the tests of all binaries run side by side (settings in
# .config/nextest.toml), then the doc tests, which nextest does not run; ZDR_TEST_RUNNER=cargo
# (or no nextest) runs them with `cargo test`, one binary after the other.
if [[ ${ZDR_TEST_RUNNER:-nextest} == nextest ]] && cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked "$@"
    cargo test --workspace --locked --doc "$@"
else
    cargo test --workspace --locked "$@"
fi
