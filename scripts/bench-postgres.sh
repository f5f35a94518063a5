#!/usr/bin/env bash
# Benchmark of zdr-postgres (not a test): `zdr backup/restore postgres` against the runbook's
# `pg_dump | gzip` / `gunzip | psql`, against `pg_dump -Fc -Z0 | zstd -1 -T2`, and against
# PostgreSQL's own ingest floor `pg_restore -j 2` from a local uncompressed custom-format file,
# all on the same data in the same run. Results: docs/bench-postgres.md.
#
#   scripts/bench-postgres.sh                   # everything (about 20 minutes on 2 cores)
#   STEPS="load backup" scripts/bench-postgres.sh   # a subset (with KEEP=1 from a previous run)
#
# What it does:
# - one throwaway PostgreSQL 15 cluster under $ROOT (default /tmp/zdr-pgbench): initdb as the
#   `postgres` OS user, a free port, scram-sha-256 over TCP on 127.0.0.1, shared_buffers=1GB,
#   max_wal_size=8GB, checkpoint_timeout=30min, fsync on;
# - database `bench`: `pgbench -i -s 50` plus /work/shared/bench/reference-db.sql (4M rows of
#   text with real entropy, jsonb, timestamps, two indexes); the size must be >= 1.5 GB;
# - the release `zdr` binary (`cargo build --release -p zdr-cli`) with a zdr.toml: fs tier under
#   $ROOT/tier, zstd level $LEVEL with $ZSTD_WORKERS worker threads, custom format with
#   --compress=0 (component `postgres`) and directory format with -j $JOBS (component `pgdir`);
# - each command timed with `/usr/bin/time -f "%e %M"` (wall seconds, peak RSS in KiB: the
#   largest single process of the command's tree); `CHECKPOINT` and `sync` before each run;
#   the 1-minute load average before each run is recorded too (other work on the machine).
#   Each measurement is repeated REPS times (default 1), interleaved (all backups, then all
#   backups again); the table shows every run. Restored databases are dropped between runs
#   (the `__zdr_old_` one after a zdr restore). The data sits in the page cache throughout.
#
# Raw results: $ROOT/results.tsv (kept) and a markdown table on stdout. The cluster, the dumps
# and the tier are removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ZDR_PGBENCH_DIR:-/tmp/zdr-pgbench}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SCALE=${SCALE:-50}
LEVEL=${LEVEL:-1}
ZSTD_WORKERS=${ZSTD_WORKERS:-2}
JOBS=${JOBS:-2}
KEEP=${KEEP:-0}
REPS=${REPS:-1}
STEPS=${STEPS:-"load backup restore dir"}
REFERENCE=${REFERENCE:-/work/shared/bench/reference-db.sql}
PW=bench-pw-$$

[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
for t in zstd gzip python3 runuser numfmt; do
    command -v "$t" >/dev/null || { echo "bench-postgres.sh: $t is missing" >&2; exit 1; }
done
[ -x "$PG_BIN/initdb" ] || { echo "bench-postgres.sh: no PostgreSQL in $PG_BIN" >&2; exit 1; }

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

mkdir -p "$ROOT"
STATE="$ROOT/state.env"
RESULTS="$ROOT/results.tsv"

cleanup() {
    if [ "$KEEP" = 1 ]; then
        log "KEEP=1: cluster and files left in $ROOT (stop: runuser -u postgres -- $PG_BIN/pg_ctl -D $ROOT/pg/data stop)"
        return
    fi
    if [ -d "$ROOT/pg/data" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$ROOT/pg" "$ROOT/tier" "$ROOT/files" "$ROOT/spool" "$ROOT/zdr.toml" "$STATE"
    log "removed the cluster and the dumps (results kept in $RESULTS)"
}
trap cleanup EXIT

if [ -f "$STATE" ] && ! has_step load; then
    # shellcheck disable=SC1090
    source "$STATE"
else
    rm -rf "$ROOT/pg" "$ROOT/tier" "$ROOT/files" "$ROOT/spool"
    mkdir -p "$ROOT/pg" "$ROOT/tier" "$ROOT/files" "$ROOT/spool"
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
fi
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=zdr PGPASSWORD=$PW PGSSLMODE=disable
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -t -A -d "${2:-postgres}" -c "$1"; }

if has_step load; then
    log "loading: pgbench -i -s $SCALE, then $REFERENCE"
    sql "CREATE DATABASE bench"
    "$PGBENCH" -i -s "$SCALE" -q bench >/dev/null 2>&1
    "${PSQL[@]}" -d bench -f "$REFERENCE" >/dev/null
    sql "VACUUM ANALYZE" bench
fi
SIZE=$(sql "SELECT pg_database_size('bench')")
log "database bench: $(numfmt --to=iec "$SIZE") ($SIZE bytes)"
[ "$SIZE" -ge "${MIN_SIZE:-1500000000}" ] || { echo "bench-postgres.sh: bench is only $SIZE bytes" >&2; exit 1; }

log "building the release zdr (cargo build --release -p zdr-cli)"
cargo build --release -q -p zdr-cli
ZDR="$PWD/target/release/zdr"
CFG="$ROOT/zdr.toml"
cat >"$CFG" <<EOF
primary = "local"
schedule = "daily"

[pipeline]
compression = "zstd"
level = $LEVEL
zstd_workers = $ZSTD_WORKERS

[tiers.local]
type = "fs"
root = "$ROOT/tier"

[components.postgres]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "bench"
bin_dir = "$PG_BIN"
format = "custom"

[components.pgdir]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "bench"
bin_dir = "$PG_BIN"
format = "directory:$JOBS"
EOF
export ZDR_COMPONENTS__POSTGRES__PASSWORD=$PW ZDR_COMPONENTS__PGDIR__PASSWORD=$PW
# The directory format spools into the system temp dir: put it on the same disk, in $ROOT.
export TMPDIR="$ROOT/spool"

settle() {
    sql "CHECKPOINT" >/dev/null
    sync
}

# timed NAME COMMAND: run COMMAND with bash, record wall seconds and peak RSS (KiB).
timed() {
    local name=$1 cmd=$2
    settle
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    log "$name (load $LOAD): $cmd"
    /usr/bin/time -f "%e %M" -o "$ROOT/time.out" bash -o pipefail -c "$cmd" >"$ROOT/files/$name.out" 2>"$ROOT/files/$name.err" || {
        echo "bench-postgres.sh: $name failed:" >&2
        cat "$ROOT/files/$name.err" >&2
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

F="$ROOT/files"
: >"$RESULTS"
printf 'database_size\t%s\n' "$SIZE" >>"$RESULTS"
for _ in $(seq "$REPS"); do
if has_step backup; then
    rm -rf "$ROOT"/tier/postgres "$ROOT"/tier/manifests/postgres
    # Where the time goes: pg_dump alone, and zdr without the exact row counts (the latest
    # backup, restored below, is the default one with counts).
    timed backup_pg_dump_only "'$PG_BIN/pg_dump' -Fc -Z0 bench > /dev/null"
    timed backup_zdr_no_counts "ZDR_COMPONENTS__POSTGRES__ROW_COUNTS=false '$ZDR' --config '$CFG' --no-progress backup postgres"
    timed backup_zdr "'$ZDR' --config '$CFG' --no-progress backup postgres"
    timed backup_gzip "'$PG_BIN/pg_dump' bench | gzip > '$F/f.sql.gz'"
    timed backup_zstd "'$PG_BIN/pg_dump' -Fc -Z0 bench | zstd -q -1 -T2 > '$F/f.dump.zst'"
    for f in f.sql.gz f.dump.zst; do
        printf 'size_%s\t%s\n' "$f" "$(stat -c %s "$F/$f")" >>"$RESULTS"
    done
    printf 'size_zdr\t%s\n' "$(ls -t "$ROOT"/tier/postgres/daily/bench_*.zst | head -1 | xargs stat -c %s)" >>"$RESULTS"
fi

if has_step restore; then
    [ -f "$F/f.dump" ] || zstd -q -d "$F/f.dump.zst" -o "$F/f.dump"
    drop_restored
    timed restore_zdr "'$ZDR' --config '$CFG' --no-progress restore postgres"
    grep -h "RTO\|restored\|verified" "$F/restore_zdr.out" >&2 || true
    drop_restored
    sql "CREATE DATABASE newdb_psql"
    timed restore_gunzip_psql "gunzip < '$F/f.sql.gz' | '$PG_BIN/psql' -X -q -o /dev/null -d newdb_psql"
    drop_restored
    sql "CREATE DATABASE newdb_floor"
    timed restore_pg_restore_j2 "'$PG_BIN/pg_restore' -j 2 -d newdb_floor '$F/f.dump'"
    drop_restored
fi

if has_step dir; then
    rm -rf "$ROOT"/tier/pgdir "$ROOT"/tier/manifests/pgdir
    timed backup_zdr_dir "'$ZDR' --config '$CFG' --no-progress backup pgdir"
    printf 'size_zdr_dir\t%s\n' "$(du -cb "$ROOT"/tier/pgdir/daily/bench_* | tail -1 | cut -f1)" >>"$RESULTS"
    drop_restored
    timed restore_zdr_dir "'$ZDR' --config '$CFG' --no-progress restore pgdir"
    grep -h "RTO\|restored\|verified" "$F/restore_zdr_dir.out" >&2 || true
    drop_restored
fi
done

echo
echo "| step | wall s | peak RSS MiB | load before |"
echo "| --- | ---: | ---: | ---: |"
awk -F'\t' 'NF == 4 { printf "| %s | %s | %.0f | %s |\n", $1, $2, $3 / 1024, $4 }' "$RESULTS"
grep -v -P '\t.*\t' "$RESULTS" | sed 's/^/    /'
