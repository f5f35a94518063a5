#!/usr/bin/env bash
# Benchmark (not a test) of the runbook's "full system disaster" scenario: `zdr recover system`
# bringing a PostgreSQL container (>= 1 GB), a Redis container (>= 500 MB), the stack's object
# store in its container (`zdr-test/seaweedfs`, a bucket of >= 1 GB) and config files back from
# an S3 tier (SeaweedFS) after the local tier, the containers with their volumes and the config
# directory are all gone. REDIS_IN=host runs Redis as a process on the host instead
# (its dataset lost, the server restarted by its start_command). Target: <= 5 min on this machine (runbook
# objective: 24 h).
#
#   scripts/bench-recover-system.sh                               # builds the release zdr
#   ZDR_BIN=target/release/zdr scripts/bench-recover-system.sh    # no build: use this binary
#   PG_SCALE=70 REDIS_KEYS=500000 REDIS_VALUE=1000 REDIS_IN=container OBJECTS=1000
#   OBJECT_SIZE=1048576 (the defaults; OBJECTS=0 leaves the object store out)
#
# Everything lives under $W (default $TMPDIR/zdr-systembench) and is removed at the end except
# $W/results.md (printed) and the recovery's report.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-${TMPDIR:-/tmp}/zdr-systembench}
PG_SCALE=${PG_SCALE:-70}
REDIS_KEYS=${REDIS_KEYS:-500000}
REDIS_VALUE=${REDIS_VALUE:-1000}
REDIS_IN=${REDIS_IN:-container}
OBJECTS=${OBJECTS:-1000}
OBJECT_SIZE=${OBJECT_SIZE:-1048576}
S3_IMAGE=zdr-test/seaweedfs:current
OS=zdrs-objects
OSVOL=zdrs-objects-data
OS_USER=zdrs-root
OS_PW=bench-os-pw-$$
PG_IMAGE=zdr-test/postgres:current
REDIS_IMAGE=zdr-test/redis:current
RC=zdrs-redis
RVOL=zdrs-redis-data
BASE_IMAGE=zdr-test/base:current
PG=zdrs-pg
APP=zdrs-app
VOL=zdrs-pg-data
PW=bench-pw-$$
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
WEED_PID=
RPORT=$(free_port)
cleanup() {
    docker rm -f "$PG" "$APP" "$RC" "$OS" >/dev/null 2>&1 || true
    for v in $(docker volume ls -q | grep -E "^($VOL|$RVOL|$OSVOL)" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
    redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
    if [ -n "$WEED_PID" ]; then kill -- "-$WEED_PID" 2>/dev/null || true; wait "$WEED_PID" 2>/dev/null || true; fi
    if [ -f "$W/results.md" ]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md ! -name report.md -exec rm -rf {} +
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

command -v weed >/dev/null || { echo "bench-recover-system.sh: SeaweedFS weed is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
for image in "$PG_IMAGE" "$BASE_IMAGE" "$REDIS_IMAGE" "$S3_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || bash scripts/build-test-images.sh
done
if [[ -n $ZDR_BIN_ARG ]]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
docker rm -f "$PG" "$APP" "$RC" "$OS" >/dev/null 2>&1 || true
for v in $(docker volume ls -q | grep -E "^($VOL|$RVOL|$OSVOL)" || true); do docker volume rm "$v" >/dev/null; done
rm -rf "$W"; mkdir -p "$W/redis" "$W/s3" "$W/tier" "$W/config"

# PostgreSQL in its container, with an app container depending on it.
PGPORT=$(free_port)
docker run -d --name "$PG" -e POSTGRES_PASSWORD="$PW" -e POSTGRES_DB=app \
    -v "$VOL:/var/lib/postgresql/data" -p "127.0.0.1:$PGPORT:5432" "$PG_IMAGE" >/dev/null
docker run -d --name "$APP" "$BASE_IMAGE" sh -c "trap 'exit 0' TERM; while :; do sleep 0.2; done" >/dev/null
until [[ $(docker inspect -f '{{.State.Health.Status}}' "$PG") == healthy ]]; do sleep 0.2; done
log "loading PostgreSQL: pgbench -i -s $PG_SCALE"
docker exec "$PG" pgbench -q -i -s "$PG_SCALE" -U postgres app >/dev/null 2>&1
PG_SIZE=$(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT pg_size_pretty(pg_database_size('app'))")
PG_ROWS=$(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT count(*) FROM pgbench_accounts")

if [[ $REDIS_IN == container ]]; then
    # Redis in its container, /data on a volume, no persistence of its own (as on the host).
    docker run -d --name "$RC" -v "$RVOL:/data" -p "127.0.0.1:$RPORT:6379" "$REDIS_IMAGE" \
        redis-server --save "" --appendonly no >/dev/null
else
    # Redis on the host, its dataset under $W/redis.
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$W/redis" --save "" --appendonly no \
        --daemonize yes --pidfile "$W/redis/redis.pid" --logfile "$W/redis.log"
fi
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
log "loading Redis: $REDIS_KEYS keys of $REDIS_VALUE bytes"
python3 scripts/gen-redis.py "$REDIS_KEYS" "$REDIS_VALUE" | redis-cli -p "$RPORT" --pipe >/dev/null
REDIS_MEM=$(redis-cli -p "$RPORT" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r')
REDIS_KEYS_NOW=$(redis-cli -p "$RPORT" dbsize)

# The object store in its container: bucket `uploads`, OBJECTS random objects of OBJECT_SIZE.
OSPORT=$(free_port)
# "COUNT BYTES" of the objects in bucket uploads.
bucket_total() {
    python3 - "$OSPORT" "$OS_USER" "$OS_PW" <<'EOF'
import sys
import boto3
port, user, pw = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=user,
                  aws_secret_access_key=pw, region_name="us-east-1")
count = total = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="uploads"):
    for o in page.get("Contents", []):
        count += 1
        total += o["Size"]
print(count, total)
EOF
}
OBJ_BYTES=0
OBJ_COUNT=0
if ((OBJECTS > 0)); then
    docker run -d --name "$OS" -e MINIO_ROOT_USER="$OS_USER" -e MINIO_ROOT_PASSWORD="$OS_PW" \
        -v "$OSVOL:/data" -p "127.0.0.1:$OSPORT:8333" "$S3_IMAGE" >/dev/null
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$OS") == healthy ]]; do sleep 0.2; done
    log "loading the object store: $OBJECTS objects of $OBJECT_SIZE bytes"
    python3 - "$OSPORT" "$OS_USER" "$OS_PW" "$OBJECTS" "$OBJECT_SIZE" <<'EOF'
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
port, user, pw, n, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=user,
                  aws_secret_access_key=pw, region_name="us-east-1")
s3.create_bucket(Bucket="uploads")
def put(i):
    s3.put_object(Bucket="uploads", Key=f"tenant-{i % 10}/file-{i:06}.bin", Body=os.urandom(size),
                  ContentType="application/octet-stream")
with ThreadPoolExecutor(8) as pool:
    list(pool.map(put, range(n)))
EOF
    read -r OBJ_COUNT OBJ_BYTES < <(bucket_total)
fi

# Config files: a copy of /usr/share/doc (thousands of small files).
cp -a /usr/share/doc/. "$W/config/"
CONFIG_FILES=$(find "$W/config" -type f | wc -l)
(cd "$W/config" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$W/config.sums"

# SeaweedFS as the offsite S3 tier.
read -r P_MASTER P_VOLUME P_FILER P_S3 P_ADMIN < <(python3 - <<'EOF'
import random, socket
def free(p):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close(); return True
    except OSError:
        return False
got = []
while len(got) < 5:
    p = random.randint(20000, 29999)
    if p not in got and p + 10000 not in got and free(p) and free(p + 10000):
        got.append(p)
print(*got)
EOF
)
S3_KEY=ZDRSYS$RANDOM$RANDOM
S3_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
cat >"$W/s3/s3.json" <<EOF
{"identities": [{"name": "zdr", "credentials": [{"accessKey": "$S3_KEY", "secretKey": "$S3_SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
args=(mini "-dir=$W/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 "-s3.config=$W/s3/s3.json"
    -bucket=zdr-offsite -s3.autoCreateBucket=false -webdav=false -admin.ui=false
    -master.telemetry=false "-filer.localSocket=$W/s3/filer.sock" "-s3.localSocket=$W/s3/s3.sock"
    -s3.port.iceberg=0 -s3.port.lance=0)
for np in master:$P_MASTER volume:$P_VOLUME filer:$P_FILER s3:$P_S3 admin:$P_ADMIN; do
    args+=("-${np%%:*}.port=${np#*:}" "-${np%%:*}.port.grpc=$(( ${np#*:} + 10000 ))")
done
(cd "$W/s3" && TMPDIR="$W/s3" exec setsid weed "${args[@]}" >"$W/s3/weed.log" 2>&1) &
WEED_PID=$!
until curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" \
    "http://127.0.0.1:$P_S3/zdr-offsite?list-type=2" 2>/dev/null | grep -q 200; do sleep 0.2; done

cat >"$W/zdr.toml" <<EOF
primary = "local"
replicate_to = ["offsite"]
[pipeline]
compression = "zstd"
level = 1
[tiers.local]
type = "fs"
root = "$W/tier"
[tiers.offsite]
type = "s3"
bucket = "zdr-offsite"
endpoint = "http://127.0.0.1:$P_S3"
region = "us-east-1"
root = "/zdr"
[components.db]
type = "postgres"
host = "127.0.0.1"
port = $PGPORT
user = "postgres"
database = "app"
runner = "docker"
container = "$PG"
dependents = ["$APP"]
[components.configs]
type = "files"
path = "$W/config"
[components.cache]
type = "redis"
url = "redis://127.0.0.1:$RPORT"
EOF
if [[ $REDIS_IN == container ]]; then
    printf 'runner = "docker"\ncontainer = "%s"\n' "$RC" >>"$W/zdr.toml"
else
    cat >>"$W/zdr.toml" <<EOF
data_dir = "$W/redis"
start_command = ["redis-server", "--port", "$RPORT", "--bind", "127.0.0.1", "--dir", "$W/redis", "--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", "$W/redis/redis.pid", "--logfile", "$W/redis.log"]
EOF
fi
if ((OBJECTS > 0)); then
    cat >>"$W/zdr.toml" <<EOF
[components.objects]
type = "s3-bucket"
endpoint = "http://127.0.0.1:$OSPORT"
region = "us-east-1"
buckets = ["uploads"]
access_key_id = "$OS_USER"
runner = "docker"
container = "$OS"
EOF
fi
export ZDR_COMPONENTS__DB__PASSWORD=$PW ZDR_TIERS__OFFSITE__ACCESS_KEY_ID=$S3_KEY ZDR_TIERS__OFFSITE__SECRET_ACCESS_KEY=$S3_SECRET
export ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY=$OS_PW
zdr() { "$ZDR" --config "$W/zdr.toml" --no-progress "$@"; }
log "database $PG_SIZE ($PG_ROWS rows), Redis $REDIS_MEM ($REDIS_KEYS_NOW keys), $CONFIG_FILES config files; backing up and replicating"
COMPONENTS=(db cache configs)
((OBJECTS > 0)) && COMPONENTS+=(objects)
for c in "${COMPONENTS[@]}"; do zdr backup "$c" --replicate >/dev/null; done
OFFSITE=$(du -sh "$W/s3" | cut -f1)

# The disaster.
docker kill "$PG" >/dev/null; docker rm -f "$PG" >/dev/null; docker volume rm "$VOL" >/dev/null
if [[ $REDIS_IN == container ]]; then
    docker kill "$RC" >/dev/null; docker rm -f "$RC" >/dev/null; docker volume rm "$RVOL" >/dev/null
else
    redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$W/redis/dump.rdb"
fi
if ((OBJECTS > 0)); then
    docker kill "$OS" >/dev/null; docker rm -f "$OS" >/dev/null; docker volume rm "$OSVOL" >/dev/null
fi
rm -rf "$W/tier" "$W/config"
log "disaster: local tier, containers and volumes, Redis dataset, object store and config files gone"

load=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
zdr recover system --from offsite --no-backup >"$W/report.md"
t1=$(date +%s.%N)
SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
rows=$(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT count(*) FROM pgbench_accounts")
keys=$(redis-cli -p "$RPORT" dbsize)
[[ $rows == "$PG_ROWS" ]] || { echo "PostgreSQL: $rows rows, not $PG_ROWS" >&2; exit 1; }
[[ $keys == "$REDIS_KEYS_NOW" ]] || { echo "Redis: $keys keys, not $REDIS_KEYS_NOW" >&2; exit 1; }
(cd "$W/config" && sha256sum --quiet -c "$W/config.sums") || { echo "config files differ" >&2; exit 1; }
if ((OBJECTS > 0)); then
    back=$(bucket_total)
    [[ $back == "$OBJ_COUNT $OBJ_BYTES" ]] || { echo "object store: $back, not $OBJ_COUNT $OBJ_BYTES" >&2; exit 1; }
fi
log "recovered in $SECS s; data checked"

{
    echo "Full system recovery from the S3 tier (SeaweedFS), local tier wiped; load average before: $load"
    echo
    echo "| data | size |"
    echo "|---|---|"
    echo "| PostgreSQL in its container (pgbench -s $PG_SCALE) | $PG_SIZE, $PG_ROWS rows in pgbench_accounts |"
    echo "| Redis ($REDIS_IN) | $REDIS_MEM used_memory, $REDIS_KEYS_NOW keys |"
    echo "| config files | $CONFIG_FILES files |"
    ((OBJECTS > 0)) && echo "| object store in its container (bucket uploads) | $OBJ_COUNT objects, $OBJ_BYTES bytes |"
    echo "| on the S3 tier | $OFFSITE |"
    echo
    echo "\`zdr recover system --from offsite --no-backup\`: **$SECS s** (target <= 300 s)"
    echo
    grep -E '^\| [0-9]+ \|' "$W/report.md" | sed 's/^/    /'
} >"$W/results.md"
cat "$W/results.md"
