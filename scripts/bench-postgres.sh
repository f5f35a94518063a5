#!/usr/bin/env bash
# Benchmark of zdr-postgres (not a test): `zdr backup/restore postgres` against the runbook's
# `pg_dump | gzip` / `gunzip | psql`, against `pg_dump -Fc -Z0 | zstd -1 -T2`, against
# PostgreSQL's own ingest floor `pg_restore -j 2` from a local uncompressed custom-format file,
# and a restore from an S3 tier (SeaweedFS) against the same restore from the local tier — all
# on the same data in the same run.
#
#   scripts/bench-postgres.sh                          # everything, REPS=3
#   ZDR_BIN=target/release/zdr scripts/bench-postgres.sh   # no cargo build: use this binary
#   KEEP=1 scripts/bench-postgres.sh; STEPS="restore" KEEP=1 scripts/bench-postgres.sh
#                                                      # rerun a subset on the kept cluster
#   KEEP=1 STEPS=load scripts/bench-postgres.sh        # only create and load the cluster
#
# What it does:
# - the `zdr` binary: $ZDR_BIN when given (nothing is built), else `cargo build --release
#   -p zdr-cli` into the checkout's target dir ($CARGO_TARGET_DIR when set);
# - one throwaway PostgreSQL 15 cluster under $ROOT (default $TMPDIR/zdr-pgbench): initdb as the
#   `postgres` OS user, a free port, scram-sha-256 over TCP on 127.0.0.1, shared_buffers=1GB,
#   max_wal_size=8GB, checkpoint_timeout=30min, fsync on;
# - database `bench`: `pgbench -i -s $SCALE` plus $REFERENCE (default scripts/bench-reference.sql:
#   4M rows of text with real entropy, jsonb, timestamps, two indexes); the size must be >= 1.5 GB.
#   A fingerprint of the data (row counts and sums of every table) is kept with the cluster: a
#   kept cluster (KEEP=1) whose data no longer matches it is dropped and loaded again;
# - zdr.toml: fs tier under $ROOT/tier, an S3 tier on a SeaweedFS `weed mini` under $ROOT/s3
#   (step s3; `weed` from scripts/install-test-deps.sh), zstd level $LEVEL with $ZSTD_WORKERS
#   worker threads, custom format (component `postgres`, restored with pg_restore -j <cores>
#   from a verified spool under $ROOT/spool) and directory format with -j $JOBS (component
#   `pgdir`, step dir); step diag adds `pg_dump` alone and zdr without row counts to the backups;
# - each command timed with `/usr/bin/time -f "%e %M"` (wall seconds, peak RSS in KiB: the
#   largest single process of the command's tree); `CHECKPOINT` and `sync` before each run;
#   `/proc/loadavg` (1, 5 and 15 minutes) before each run is recorded beside the figure (other
#   work on the machine). Everything is repeated REPS times (default 3), interleaved (all
#   steps, then all steps again); the table shows every run. Restored databases are dropped
#   between runs (the `__zdr_old_` one after a zdr restore). The data sits in the page cache.
#
# Results: $ROOT/results.tsv (raw) and $ROOT/results.md (the table, also printed), kept.
# Everything else (cluster, dumps, tiers, S3 server, config) is removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ZDR_PGBENCH_DIR:-${TMPDIR:-/tmp}/zdr-pgbench}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SCALE=${SCALE:-50}
LEVEL=${LEVEL:-1}
ZSTD_WORKERS=${ZSTD_WORKERS:-2}
JOBS=${JOBS:-2}
KEEP=${KEEP:-0}
REPS=${REPS:-3}
STEPS=${STEPS:-"load backup restore s3"}
REFERENCE=${REFERENCE:-scripts/bench-reference.sql}
PW=bench-pw-$$
# zdr reads ZDR_* variables as config overrides: keep the binary's path out of its environment.
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
for t in zstd gzip python3 runuser numfmt; do
    command -v "$t" >/dev/null || { echo "bench-postgres.sh: $t is missing" >&2; exit 1; }
done
[ -x "$PG_BIN/initdb" ] || { echo "bench-postgres.sh: no PostgreSQL in $PG_BIN" >&2; exit 1; }
[ -f "$REFERENCE" ] || { echo "bench-postgres.sh: no reference data $REFERENCE" >&2; exit 1; }
if has_step s3; then
    command -v weed >/dev/null || { echo "bench-postgres.sh: SeaweedFS weed is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
fi

mkdir -p "$ROOT"
STATE="$ROOT/state.env"
RESULTS="$ROOT/results.tsv"
REPORT="$ROOT/results.md"
F="$ROOT/files"
WEED_PID=

stop_weed() {
    if [ -n "$WEED_PID" ]; then
        kill -- "-$WEED_PID" 2>/dev/null || true
        wait "$WEED_PID" 2>/dev/null || true
        WEED_PID=
    fi
}

cleanup() {
    stop_weed
    if [ "$KEEP" = 1 ]; then
        log "KEEP=1: cluster and files left in $ROOT (stop: runuser -u postgres -- $PG_BIN/pg_ctl -D $ROOT/pg/data stop)"
        return
    fi
    if [ -d "$ROOT/pg/data" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$ROOT/pg" "$ROOT/tier" "$F" "$ROOT/spool" "$ROOT/s3" "$ROOT/zdr.toml" "$ROOT/time.out" "$STATE"
    log "removed the cluster, the dumps, the tiers and the S3 server (results kept: $RESULTS, $REPORT)"
}
trap cleanup EXIT

start_cluster() {
    rm -rf "$ROOT/pg" "$ROOT/tier" "$F" "$ROOT/spool" "$ROOT/s3"
    mkdir -p "$ROOT/pg"
    chown postgres:postgres "$ROOT/pg"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s' "$PW" >"$ROOT/pg/pw"
    chown postgres "$ROOT/pg/pw"
    log "initdb in $ROOT/pg/data, port $PORT"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$ROOT/pg/data" -U zdr --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$ROOT/pg/pw" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$ROOT/pg/pw"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" -l "$ROOT/pg/log" -w -t 60 \
        -o "-p $PORT -k $ROOT/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c fsync=on" \
        start >/dev/null
    printf 'PORT=%s\nPW=%s\n' "$PORT" "$PW" >"$STATE"
}

if [ -f "$STATE" ] && [ -d "$ROOT/pg/data" ]; then
    # shellcheck disable=SC1090
    source "$STATE"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" status >/dev/null 2>&1 ||
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" -l "$ROOT/pg/log" -w -t 60 \
            -o "-p $PORT -k $ROOT/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c fsync=on" \
            start >/dev/null
else
    start_cluster
fi
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=zdr PGPASSWORD=$PW PGSSLMODE=disable
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -t -A -d "${2:-postgres}" -c "$1"; }

# Row counts and sums of every table of `bench`: equal after a faithful restore, different as
# soon as anything wrote to it.
fingerprint() {
    sql "SELECT concat_ws(',', (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts),
        (SELECT count(*) FROM pgbench_branches), (SELECT sum(bbalance) FROM pgbench_branches),
        (SELECT count(*) FROM pgbench_tellers), (SELECT sum(tbalance) FROM pgbench_tellers),
        (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM docs), (SELECT sum(n) FROM docs))" bench 2>/dev/null || echo none
}

load=0
if has_step load; then
    load=1
elif [ "$(sql "SELECT count(*) FROM pg_database WHERE datname = 'bench'")" != 1 ]; then
    log "no database bench in the kept cluster: loading it"
    load=1
else
    now=$(fingerprint)
    if [ "$now" != "${FINGERPRINT:-}" ]; then
        log "the kept database bench has drifted ($now, loaded as ${FINGERPRINT:-unknown}): loading it again"
        load=1
    fi
fi
if [ "$load" = 1 ]; then
    log "loading: pgbench -i -s $SCALE, then $REFERENCE"
    for d in $(sql "SELECT datname FROM pg_database WHERE datname LIKE 'bench%' OR datname LIKE 'newdb%'"); do
        sql "DROP DATABASE \"$d\" WITH (FORCE)"
    done
    sql "CREATE DATABASE bench"
    "$PGBENCH" -i -s "$SCALE" -q bench >/dev/null 2>&1
    "${PSQL[@]}" -d bench -f "$REFERENCE" >/dev/null
    sql "VACUUM ANALYZE" bench
    FINGERPRINT=$(fingerprint)
    printf 'PORT=%s\nPW=%s\nFINGERPRINT=%s\n' "$PORT" "$PW" "$FINGERPRINT" >"$STATE"
fi
SIZE=$(sql "SELECT pg_database_size('bench')")
log "database bench: $(numfmt --to=iec "$SIZE") ($SIZE bytes), fingerprint $FINGERPRINT"
[ "$SIZE" -ge "${MIN_SIZE:-1500000000}" ] || { echo "bench-postgres.sh: bench is only $SIZE bytes" >&2; exit 1; }
# STEPS=load alone (with KEEP=1): prepare the cluster for later runs, measure nothing.
[ "$STEPS" = load ] && exit 0

if [ -n "$ZDR_BIN_ARG" ]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    log "building the release zdr (cargo build --release -p zdr-cli)"
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
[ -x "$ZDR" ] || { echo "bench-postgres.sh: no zdr binary at $ZDR" >&2; exit 1; }


mkdir -p "$ROOT/tier" "$F" "$ROOT/spool"
S3_TIER=
if has_step s3; then
    # SeaweedFS `weed mini` with one identity and one bucket, on free ports (and port + 10000
    # free for its gRPC listeners), everything under $ROOT/s3.
    rm -rf "$ROOT/s3"
    mkdir -p "$ROOT/s3"
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
    S3_KEY=ZDRBENCH$RANDOM$RANDOM
    S3_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    cat >"$ROOT/s3/s3.json" <<EOF
{"identities": [{"name": "zdr", "credentials": [{"accessKey": "$S3_KEY", "secretKey": "$S3_SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    args=(mini "-dir=$ROOT/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 "-s3.config=$ROOT/s3/s3.json"
        -bucket=zdr-bench -s3.autoCreateBucket=false -webdav=false -admin.ui=false
        -master.telemetry=false "-filer.localSocket=$ROOT/s3/filer.sock" "-s3.localSocket=$ROOT/s3/s3.sock"
        -s3.port.iceberg=0 -s3.port.lance=0)
    for np in master:$P_MASTER volume:$P_VOLUME filer:$P_FILER s3:$P_S3 admin:$P_ADMIN; do
        args+=("-${np%%:*}.port=${np#*:}" "-${np%%:*}.port.grpc=$(( ${np#*:} + 10000 ))")
    done
    log "starting SeaweedFS (S3 on 127.0.0.1:$P_S3)"
    # exec setsid: the server is the leader of its own process group (its pid is $!), so the
    # cleanup stops it and everything it started with one signal to the group.
    (cd "$ROOT/s3" && TMPDIR="$ROOT/s3" exec setsid weed "${args[@]}" >"$ROOT/s3/weed.log" 2>&1) &
    WEED_PID=$!
    export ZDR_TIERS__S3__ACCESS_KEY_ID=$S3_KEY ZDR_TIERS__S3__SECRET_ACCESS_KEY=$S3_SECRET
    S3_TIER="
[tiers.s3]
type = \"s3\"
bucket = \"zdr-bench\"
endpoint = \"http://127.0.0.1:$P_S3\"
region = \"us-east-1\"
root = \"/zdr\""
fi

CFG="$ROOT/zdr.toml"
cat >"$CFG" <<EOF
primary = "local"
$( [ -n "$S3_TIER" ] && echo 'replicate_to = ["s3"]' )
schedule = "daily"

[pipeline]
compression = "zstd"
level = $LEVEL
zstd_workers = $ZSTD_WORKERS

[tiers.local]
type = "fs"
root = "$ROOT/tier"
$S3_TIER

[components.postgres]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "bench"
bin_dir = "$PG_BIN"
format = "custom"
spool_dir = "$ROOT/spool"

[components.pgdir]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "bench"
bin_dir = "$PG_BIN"
format = "directory:$JOBS"
spool_dir = "$ROOT/spool"
EOF
export ZDR_COMPONENTS__POSTGRES__PASSWORD=$PW ZDR_COMPONENTS__PGDIR__PASSWORD=$PW

settle() {
    sql "CHECKPOINT" >/dev/null
    sync
}

# timed NAME COMMAND: run COMMAND with bash, record wall seconds, peak RSS (KiB) and the load
# average before it.
timed() {
    local name=$1 cmd=$2
    settle
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    log "$name (load $LOAD): $cmd"
    /usr/bin/time -f "%e %M" -o "$ROOT/time.out" bash -o pipefail -c "$cmd" >"$F/$name.out" 2>"$F/$name.err" || {
        echo "bench-postgres.sh: $name failed:" >&2
        cat "$F/$name.out" "$F/$name.err" >&2
        exit 1
    }
    local secs kb
    read -r secs kb <"$ROOT/time.out"
    printf '%s\t%s\t%s\t%s\n' "$name" "$secs" "$kb" "$LOAD" >>"$RESULTS"
    log "$name: ${secs}s, peak RSS ${kb} KiB"
}

drop_restored() {
    for d in $(sql "SELECT datname FROM pg_database WHERE datname LIKE 'newdb%' OR datname LIKE 'bench\\_\\_zdr\\_%'"); do
        sql "DROP DATABASE \"$d\" WITH (FORCE)"
    done
}

ZDRC="'$ZDR' --config '$CFG' --no-progress"
: >"$RESULTS"
printf 'database_size\t%s\n' "$SIZE" >>"$RESULTS"
printf 'zdr\t%s (%s)\n' "$("$ZDR" --version 2>&1 | head -1)" "$ZDR" >>"$RESULTS"
printf 'source\t%s %s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo -)" "$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified files" >>"$RESULTS"
printf 'cores\t%s\n' "$(nproc)" >>"$RESULTS"
for rep in $(seq "$REPS"); do
if has_step backup || [ ! -f "$F/f.sql.gz" ]; then
    rm -rf "$ROOT"/tier/postgres "$ROOT"/tier/manifests/postgres
    if has_step diag; then
        # Where the time goes: pg_dump alone, and zdr without the exact row counts (the latest
        # backup, restored below, is the default one with counts).
        timed backup_pg_dump_only "'$PG_BIN/pg_dump' -Fc -Z0 bench > /dev/null"
        timed backup_zdr_no_counts "ZDR_COMPONENTS__POSTGRES__ROW_COUNTS=false $ZDRC backup postgres"
    fi
    timed backup_zdr "$ZDRC backup postgres"
    timed backup_gzip "'$PG_BIN/pg_dump' bench | gzip > '$F/f.sql.gz'"
    timed backup_zstd "'$PG_BIN/pg_dump' -Fc -Z0 bench | zstd -q -1 -T2 > '$F/f.dump.zst'"
    rm -f "$F/f.dump"
    for f in f.sql.gz f.dump.zst; do
        printf 'size_%s\t%s\n' "$f" "$(stat -c %s "$F/$f")" >>"$RESULTS"
    done
    printf 'size_zdr\t%s\n' "$(ls -t "$ROOT"/tier/postgres/daily/bench_*.zst | head -1 | xargs stat -c %s)" >>"$RESULTS"
fi

if has_step restore; then
    [ -f "$F/f.dump" ] || zstd -q -d "$F/f.dump.zst" -o "$F/f.dump"
    drop_restored
    timed restore_zdr "$ZDRC restore postgres --tier local"
    grep -h "RTO\|restored\|verified" "$F/restore_zdr.out" >&2 || true
    drop_restored
    sql "CREATE DATABASE newdb_psql"
    timed restore_gunzip_psql "gunzip < '$F/f.sql.gz' | '$PG_BIN/psql' -X -q -o /dev/null -d newdb_psql"
    drop_restored
    sql "CREATE DATABASE newdb_floor"
    timed restore_pg_restore_j2 "'$PG_BIN/pg_restore' -j 2 -d newdb_floor '$F/f.dump'"
    drop_restored
fi

if has_step s3; then
    # The latest backup, copied to S3 (read back and checked by replicate), then restored from
    # each tier, alternating which goes first.
    for i in $(seq 30); do
        $ZDR --config "$CFG" --no-progress replicate >"$F/replicate.out" 2>&1 && break
        [ "$i" = 30 ] && { cat "$F/replicate.out" >&2; exit 1; }
        sleep 2
    done
    drop_restored
    if [ $((rep % 2)) = 1 ]; then order="s3 local"; else order="local s3"; fi
    for t in $order; do
        timed "restore_zdr_from_$t" "$ZDRC restore postgres --tier $t"
        grep -h "RTO\|verified" "$F/restore_zdr_from_$t.out" >&2 || true
        drop_restored
    done
fi

if has_step dir; then
    rm -rf "$ROOT"/tier/pgdir "$ROOT"/tier/manifests/pgdir
    timed backup_zdr_dir "$ZDRC backup pgdir"
    printf 'size_zdr_dir\t%s\n' "$(du -cb "$ROOT"/tier/pgdir/daily/bench_* | tail -1 | cut -f1)" >>"$RESULTS"
    drop_restored
    timed restore_zdr_dir "$ZDRC restore pgdir --tier local"
    grep -h "RTO\|restored\|verified" "$F/restore_zdr_dir.out" >&2 || true
    drop_restored
fi
done
[ -z "$(ls -A "$ROOT/spool")" ] || { echo "bench-postgres.sh: spool not empty: $(ls "$ROOT/spool")" >&2; exit 1; }

{
    echo "| step | wall s | peak RSS MiB | load average before (1, 5, 15 min) |"
    echo "| --- | ---: | ---: | --- |"
    awk -F'\t' 'NF == 4 { printf "| %s | %s | %.0f | %s |\n", $1, $2, $3 / 1024, $4 }' "$RESULTS"
    echo
    python3 - "$RESULTS" <<'EOF'
import sys, statistics as st
runs = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) == 4:
        runs.setdefault(f[0], []).append(float(f[1]))
def ratio(a, b, what):
    if a in runs and b in runs:
        x, y = runs[a], runs[b]
        print(f"- {what}: median {st.median(x):.2f} s vs {st.median(y):.2f} s = **{st.median(x) / st.median(y):.2f}x** "
              f"(runs {min(x):.2f}-{max(x):.2f} vs {min(y):.2f}-{max(y):.2f})")
ratio("restore_zdr", "restore_gunzip_psql", "default restore vs `gunzip | psql`")
ratio("restore_zdr", "restore_pg_restore_j2", "default restore vs the `pg_restore -j 2` floor")
ratio("restore_zdr_from_s3", "restore_zdr_from_local", "restore from the S3 tier vs the local tier")
ratio("backup_zdr", "backup_zstd", "backup (with row counts) vs `pg_dump -Fc -Z0 | zstd -1 -T2`")
ratio("backup_zdr_no_counts", "backup_zstd", "backup without row counts vs the zstd anchor")
ratio("backup_zdr", "backup_gzip", "backup vs `pg_dump | gzip`")
ratio("restore_zdr_dir", "restore_pg_restore_j2", "directory-format restore vs the floor")
EOF
    echo
    grep -v -P '\t.*\t.*\t' "$RESULTS" | sed 's/^/    /'
} >"$REPORT"
echo
cat "$REPORT"
