#!/usr/bin/env bash
# Object-storage benchmark (not a test): `zdr backup` of an s3-bucket component against the
# anchors `rclone sync` (Debian's rclone) and `aws s3 sync` (awscli from PyPI) between two
# buckets of the same SeaweedFS, on OBJECTS objects (default 10,000, about 1 GB: 99 % of
# 2-100 KB, 1 % of 4-6 MiB, random content); then the same after 1 % of the objects changed;
# then zdr's peak memory for a bucket of 10,000 and of LISTED (default 100,000) small objects,
# unchanged since the previous backup (listing and comparison only), to give the memory per
# listed object (LISTED=0 skips that part).
#
#   scripts/bench-s3.sh                                  # builds the release zdr
#   ZDR_BIN=target/release/zdr scripts/bench-s3.sh       # no build: use this binary
#
# Everything lives under $W (default $TMPDIR/zdr-s3bench); SeaweedFS is stopped and $W removed
# at the end except $W/results.md (the table, also printed, with the load average before each
# run).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-${TMPDIR:-/tmp}/zdr-s3bench}
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN
OBJECTS=${OBJECTS:-10000}
LISTED=${LISTED:-100000}
for t in weed rclone aws python3 bc; do
    command -v "$t" >/dev/null || { echo "bench-s3.sh: $t is missing (weed and aws: scripts/install-test-deps.sh; rclone: apt-get install rclone)" >&2; exit 1; }
done
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
python3 -c 'import boto3' 2>/dev/null || { echo "bench-s3.sh: python3 boto3 is missing (pip install boto3)" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W/s3"
if [ -n "$ZDR_BIN_ARG" ]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi

# shellcheck source=lib-seaweed.sh
. scripts/lib-seaweed.sh
finish() {
    seaweed_stop
    if [ -f "$W/results.md" ]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md -exec rm -rf {} +
    else
        rm -rf "$W"
    fi
}
trap finish EXIT
seaweed_start
# rclone's S3 client cannot use a CA bundle from AWS_CA_BUNDLE (and needs none over http).
export RCLONE_CONFIG_SW_TYPE=s3 RCLONE_CONFIG_SW_PROVIDER=SeaweedFS RCLONE_CONFIG_SW_ENDPOINT=$EP \
    RCLONE_CONFIG_SW_ACCESS_KEY_ID=$KEY RCLONE_CONFIG_SW_SECRET_ACCESS_KEY=$SECRET RCLONE_CONFIG_SW_REGION=us-east-1

# The data, written with boto3 (16 threads); prints the bytes written.
gen() { # bucket count mode(first|change|tiny)
    python3 - "$EP" "$1" "$2" "$3" <<'EOF'
import os, random, sys, boto3
from concurrent.futures import ThreadPoolExecutor
from botocore.config import Config
ep, bucket, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s3 = boto3.client("s3", endpoint_url=ep, config=Config(max_pool_connections=32))
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
except Exception as e:
    if "BucketAlreadyExists" not in str(e):
        raise
rng = random.Random(42)
def size(i):
    if mode == "tiny":
        return 1
    return rng.randint(4 << 20, 6 << 20) if i % 100 == 99 else rng.randint(2_000, 100_000)
jobs = [(i, size(i)) for i in range(count)]
if mode == "change":
    jobs = [j for j in jobs if j[0] % 100 == 7]
def put(job):
    i, n = job
    s3.put_object(Bucket=bucket, Key=f"tenant-{i % 7}/doc-{i:07d}.bin", Body=os.urandom(n),
                  ContentType="application/octet-stream", Metadata={"n": str(i)})
    return n
with ThreadPoolExecutor(16) as ex:
    print(sum(ex.map(put, jobs)))
EOF
}

cat >"$W/zdr.toml" <<EOF
primary = "s3"
[tiers.s3]
type = "s3"
bucket = "zdr-tier"
endpoint = "$EP"
region = "us-east-1"
access_key_id = "$KEY"
[components.objects]
type = "s3-bucket"
endpoint = "$EP"
buckets = ["source"]
access_key_id = "$KEY"
[components.tiny]
type = "s3-bucket"
endpoint = "$EP"
buckets = ["tiny"]
access_key_id = "$KEY"
[components.small]
type = "s3-bucket"
endpoint = "$EP"
buckets = ["small"]
access_key_id = "$KEY"
EOF
export ZDR_CONFIG=$W/zdr.toml ZDR_TIERS__S3__SECRET_ACCESS_KEY=$SECRET \
    ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY=$SECRET ZDR_COMPONENTS__TINY__SECRET_ACCESS_KEY=$SECRET \
    ZDR_COMPONENTS__SMALL__SECRET_ACCESS_KEY=$SECRET
for b in zdr-tier mirror-rclone mirror-aws; do aws --endpoint-url "$EP" s3api create-bucket --bucket "$b" >/dev/null; done

timed() { # command...: prints "seconds peak_kib"; the load average before it in $W/load
    sync; cut -d' ' -f1-3 /proc/loadavg >"$W/load"; local s e; s=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$W/rss" "$@" >"$W/out" 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
    e=$(date +%s.%N)
    echo "$(echo "$e - $s" | bc) $(cat "$W/rss")"
}
row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$(cat "$W/load")" | tee -a "$W/results.md"; }
fact() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backup"]["facts"][sys.argv[2]])' "$W/out" "$1"; }

t0=$(date +%s)
total=$(gen source "$OBJECTS" first)
echo "wrote $OBJECTS objects, $total bytes, in $(( $(date +%s) - t0 )) s" >&2
printf '| run | seconds | peak RSS MiB | note | load average before (1, 5, 15 min) |\n|---|---:|---:|---|---|\n' | tee "$W/results.md"

read -r r1 r1m < <(timed env -u AWS_CA_BUNDLE rclone sync sw:source sw:mirror-rclone)
row "rclone sync, first ($OBJECTS objects, $total bytes)" "$r1" "$((r1m / 1024))" "server-side copies"
read -r a1 a1m < <(timed aws --endpoint-url "$EP" s3 sync s3://source s3://mirror-aws --only-show-errors)
row "aws s3 sync, first" "$a1" "$((a1m / 1024))" "server-side copies"
read -r z1 z1m < <(timed "$ZDR" --no-progress --json backup objects)
row "zdr backup, first" "$z1" "$((z1m / 1024))" "$(echo "scale=2; $z1 / $r1" | bc)x rclone; read $(fact read_objects) objects, stored $(fact stored_blob_bytes) bytes"

changed=$(gen source "$OBJECTS" change)
read -r r2 r2m < <(timed env -u AWS_CA_BUNDLE rclone sync sw:source sw:mirror-rclone)
row "rclone sync, after 1 % changed ($changed bytes)" "$r2" "$((r2m / 1024))" ""
read -r a2 a2m < <(timed aws --endpoint-url "$EP" s3 sync s3://source s3://mirror-aws --only-show-errors)
row "aws s3 sync, after 1 % changed" "$a2" "$((a2m / 1024))" ""
read -r z2 z2m < <(timed "$ZDR" --no-progress --json backup objects)
stored=$(fact stored_blob_bytes)
row "zdr backup, after 1 % changed" "$z2" "$((z2m / 1024))" "$(echo "scale=2; $z2 / $r2" | bc)x rclone; read $(fact read_objects) objects; stored $stored bytes = $(echo "scale=3; $stored / $changed" | bc)x the changed bytes"

if [ "$LISTED" = 0 ]; then
    echo "results: $W/results.md" >&2
    exit 0
fi
t0=$(date +%s)
gen small 10000 tiny >/dev/null
gen tiny "$LISTED" tiny >/dev/null
echo "wrote 10,000 + $LISTED tiny objects in $(( $(date +%s) - t0 )) s" >&2
"$ZDR" --no-progress backup small >/dev/null
"$ZDR" --no-progress backup tiny >/dev/null
read -r s2 s2m < <(timed "$ZDR" --no-progress --json backup small)
row "zdr backup, 10,000 listed objects unchanged" "$s2" "$((s2m / 1024))" "reused $(fact reused_objects)"
read -r t2 t2m < <(timed "$ZDR" --no-progress --json backup tiny)
row "zdr backup, $LISTED listed objects unchanged" "$t2" "$((t2m / 1024))" "reused $(fact reused_objects); $(( (t2m - s2m) * 1024 / (LISTED - 10000) )) bytes of peak RSS per listed object"
echo "results: $W/results.md" >&2
