#!/usr/bin/env bash
# Benchmark (not a test) of zdr's WAL archiving, base backups and PITR against pgBackRest, on
# one throwaway PostgreSQL 15 cluster, in one run. Results: BENCHMARKS.md ("WAL archiving and
# base backups").
#
#   scripts/bench-wal.sh                          # everything (about 6 minutes with REPS=3, plus the build)
#   SEGMENTS=40 REPS=1 scripts/bench-wal.sh       # the defaults
#   ZDR_BIN=/path/to/zdr scripts/bench-wal.sh     # no cargo build, use this binary
#   KEEP=1 ... then STEPS="segments base" ...     # rerun a subset on the kept cluster
#
# What it does:
# - the `zdr` binary: $ZDR_BIN when given (nothing is built), else `cargo build --release
#   -p zdr-cli` into the checkout's target dir ($CARGO_TARGET_DIR when set); installs
#   pgbackrest with apt if it is missing;
# - one PostgreSQL 15 cluster under $ROOT (default $TMPDIR/zdr-walbench), initdb as the `postgres`
#   OS user, a free port, scram-sha-256 over TCP, shared_buffers=1GB, max_wal_size=8GB,
#   checkpoint_timeout=30min, fsync on, wal_level=replica, archive_mode=on, archive_command
#   `true` while loading; database `bench` = `pgbench -i -s 50` + $REFERENCE (default
#   scripts/bench-reference.sql; >= 1.5 GB). A fingerprint of the data (row counts and sums) is
#   kept with the cluster: a kept cluster (KEEP=1) whose data changed (the segments step writes
#   to it) is dropped and loaded again, so every run measures the same database;
# - segments: write load (`pgbench -c 1` beside 100k-row UPDATEs of docs) until SEGMENTS+2
#   segments were written, then the first SEGMENTS completed segments are copied out of pg_wal
#   into $ROOT/segs. Each one is then pushed, as the `postgres` OS user with one process per segment as archive_command does,
#   with `zdr wal push` into an fs tier (lz4) and with `pgbackrest archive-push` into a local
#   repo (compress-type=lz4, archive-async=n, repo on the same disk); the two alternate which
#   goes first from segment to segment so both see the same cache and load. Then the same for
#   `zdr wal fetch` (its background prefetch off: prefetch = 0) / `pgbackrest archive-get`
#   (archive-async=n) into a scratch dir (each fetched file compared with the original after
#   the timing); then, as recovery calls them, in order, each with its read-ahead on: zdr's
#   default prefetch (4) and pgBackRest's archive-async=y archive-get (not interleaved).
#   Times are wall clock around each process ($EPOCHREALTIME, no fork for the clock). zdr runs
#   with --json to record the time it spends inside the push itself (its "milliseconds"), the rest is process start, config, tier open.
#   Probes for where the time goes: `zdr --version`, a fetch of a missing segment (start +
#   config + tier open + lookup), `pgbackrest version`, its archive-get of a missing segment,
#   `lz4 -1`, `sha256sum`, and `dd conv=fsync` of one segment.
# - base backups (each after CHECKPOINT + sync, /usr/bin/time for wall s and peak RSS):
#   `zdr backup postgres --base` ([pipeline] compression = "lz4", fs tier; archive_command =
#   `zdr wal push`), `pgbackrest backup --type=full` (compress-type=lz4, process-max=2,
#   start-fast=y; archive_command = `pgbackrest archive-push`, switched with ALTER SYSTEM +
#   pg_reload_conf, so its archive check is on), and `pg_basebackup -D dir -Ft -z` (gzip, WAL
#   streamed) as a reference;
# - PITR: `zdr pitr postgres --target latest --discard` after zdr's base backup; its RTO line.
#
# Each timed command records `/proc/loadavg` (1, 5, 15 minutes) before it, beside its figure.
# Raw results: $ROOT/results.tsv and $ROOT/segments.tsv, the table in $ROOT/results.md (also
# printed), kept. The cluster is stopped and everything else removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ZDR_WALBENCH_DIR:-${TMPDIR:-/tmp}/zdr-walbench}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SCALE=${SCALE:-50}
SEGMENTS=${SEGMENTS:-40}
REPS=${REPS:-1}
KEEP=${KEEP:-0}
STEPS=${STEPS:-"load segments base"}
REFERENCE=${REFERENCE:-scripts/bench-reference.sql}
PW=bench-pw-$$
# zdr reads ZDR_* environment variables as config keys: ZDR_BIN would be an unknown key `bin`
# and every zdr command (archive_command too: the server inherits this environment) would fail.
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if ! command -v pgbackrest >/dev/null; then
    log "installing pgbackrest (apt-get install -y pgbackrest)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }
fi
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
for t in lz4 sha256sum python3 runuser numfmt pgbackrest; do
    command -v "$t" >/dev/null || { echo "bench-wal.sh: $t is missing" >&2; exit 1; }
done
[ -x "$PG_BIN/initdb" ] || { echo "bench-wal.sh: no PostgreSQL in $PG_BIN" >&2; exit 1; }


mkdir -p "$ROOT"
chmod 755 "$ROOT"
STATE="$ROOT/state.env"
RESULTS="$ROOT/results.tsv"
SEGTSV="$ROOT/segments.tsv"
PGDATA="$ROOT/pg/data"
as_pg() { runuser -u postgres -- "$@"; }

cleanup() {
    if [ "$KEEP" = 1 ]; then
        log "KEEP=1: cluster and files left in $ROOT (stop: runuser -u postgres -- $PG_BIN/pg_ctl -D $PGDATA stop)"
        return
    fi
    if [ -d "$PGDATA" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    # A recovery instance left by a failed pitr run.
    for d in "$ROOT"/recovery/*/; do
        [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$ROOT/pg" "$ROOT/tier" "$ROOT/files" "$ROOT/segs" "$ROOT/scratch" "$ROOT/recovery" \
        "$ROOT/pgbr" "$ROOT/zdr.toml" "$ROOT/zdr-noprefetch.toml" "$ROOT/pgbackrest.conf" \
        "$ROOT/segloop.sh" "$ROOT/segloop.err" "$ROOT/time.out" "$STATE"
    log "stopped the cluster, removed its data (results kept in $RESULTS, $SEGTSV)"
}
trap cleanup EXIT

if [ -f "$STATE" ] && [ -d "$PGDATA" ]; then
    # shellcheck disable=SC1090
    source "$STATE"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 ||
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$ROOT/pg/log" -w -t 60 start >/dev/null
else
    for d in "$ROOT"/pg/data; do
        [ -d "$d" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$ROOT/pg" "$ROOT/tier" "$ROOT/files" "$ROOT/segs" "$ROOT/scratch" "$ROOT/recovery" "$ROOT/pgbr"
    mkdir -p "$ROOT/pg"
    chown postgres:postgres "$ROOT/pg"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s' "$PW" >"$ROOT/pg/pw"
    chown postgres "$ROOT/pg/pw"
    log "initdb in $PGDATA, port $PORT"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U zdr --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$ROOT/pg/pw" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$ROOT/pg/pw"
    cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$ROOT/pg'
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
fsync = on
wal_level = replica
archive_mode = on
archive_command = 'true'
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$ROOT/pg/log" -w -t 60 start >/dev/null
    printf 'PORT=%s\nPW=%s\n' "$PORT" "$PW" >"$STATE"
fi
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=zdr PGPASSWORD=$PW PGSSLMODE=disable
export ZDR_COMPONENTS__POSTGRES__PASSWORD=$PW
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -t -A -d "${2:-postgres}" -c "$1"; }

# Row counts and sums of the tables of `bench`: they change as soon as anything writes to it.
fingerprint() {
    sql "SELECT concat_ws(',', (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts),
        (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM docs), (SELECT sum(n) FROM docs))" bench 2>/dev/null || echo none
}
load=0
if has_step load; then
    load=1
elif [ "$(fingerprint)" != "${FINGERPRINT:-}" ]; then
    log "the kept database bench is missing or has changed since it was loaded: loading it again"
    load=1
fi
if [ "$load" = 1 ]; then
    log "loading: pgbench -i -s $SCALE, then $REFERENCE"
    sql "DROP DATABASE IF EXISTS bench WITH (FORCE)"
    sql "CREATE DATABASE bench"
    "$PGBENCH" -i -s "$SCALE" -q bench >/dev/null 2>&1
    "${PSQL[@]}" -d bench -f "$REFERENCE" >/dev/null
    sql "VACUUM ANALYZE" bench
    FINGERPRINT=$(fingerprint)
    printf 'PORT=%s\nPW=%s\nFINGERPRINT=%s\n' "$PORT" "$PW" "$FINGERPRINT" >"$STATE"
fi
SIZE=$(sql "SELECT pg_database_size('bench')")
log "database bench: $(numfmt --to=iec "$SIZE") ($SIZE bytes)"
[ "$SIZE" -ge "${MIN_SIZE:-1500000000}" ] || { echo "bench-wal.sh: bench is only $SIZE bytes" >&2; exit 1; }

if [ -n "$ZDR_BIN_ARG" ]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    log "building the release zdr (cargo build --release -p zdr-cli)"
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
[ -x "$ZDR" ] || { echo "bench-wal.sh: no zdr binary at $ZDR" >&2; exit 1; }

# --- zdr and pgBackRest configuration ---------------------------------------------------------
mkdir -p "$ROOT/tier/.zdr-tmp" "$ROOT/files" "$ROOT/segs" "$ROOT/scratch" "$ROOT/recovery" \
    "$ROOT/pgbr/repo" "$ROOT/pgbr/log" "$ROOT/pgbr/lock" "$ROOT/pgbr/spool"
chown -R postgres:postgres "$ROOT/tier" "$ROOT/segs" "$ROOT/scratch" "$ROOT/recovery" "$ROOT/pgbr"
CFG="$ROOT/zdr.toml"
cat >"$CFG" <<EOF
primary = "local"
schedule = "daily"

[pipeline]
compression = "lz4"

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

[components.postgres.wal]
tiers = ["local"]
compression = "lz4"
run_as = "postgres"
recovery_dir = "$ROOT/recovery"
archive_wait_secs = 300
recovery_timeout_secs = 3600
EOF
# The same with the background prefetch of `wal fetch` off: the per-segment comparison with
# pgBackRest's synchronous archive-get (archive-async=n) must not leave zdr work running.
sed '/^\[components.postgres.wal\]$/a prefetch = 0' "$CFG" >"$ROOT/zdr-noprefetch.toml"
BRCONF="$ROOT/pgbackrest.conf"
cat >"$BRCONF" <<EOF
[global]
repo1-path=$ROOT/pgbr/repo
repo1-retention-full=10
compress-type=lz4
process-max=2
archive-async=n
start-fast=y
log-path=$ROOT/pgbr/log
lock-path=$ROOT/pgbr/lock
spool-path=$ROOT/pgbr/spool
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$ROOT/pg
pg1-user=zdr
EOF
chmod 644 "$CFG" "$ROOT/zdr-noprefetch.toml" "$BRCONF"
BR=(pgbackrest "--config=$BRCONF" --stanza=bench)
ZDR_PUSH="$ZDR --config $CFG --no-progress wal push --component postgres %p"
BR_PUSH="pgbackrest --config=$BRCONF --stanza=bench archive-push %p"
if [ ! -f "$ROOT/pgbr/repo/archive/bench/archive.info" ]; then
    as_pg "${BR[@]}" stanza-create >/dev/null
fi

set_archive() {
    local cmd=$1
    sql "ALTER SYSTEM SET archive_command = '$cmd'" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    sleep 1
}
# Wait until the archiver has nothing left to do (no .ready file).
wait_archived() {
    local i
    for i in $(seq 600); do
        compgen -G "$PGDATA/pg_wal/archive_status/*.ready" >/dev/null || return 0
        sleep 0.5
    done
    echo "bench-wal.sh: the archiver did not catch up: $(sql "SELECT * FROM pg_stat_archiver")" >&2
    exit 1
}

: >"$RESULTS"
printf 'database_size\t%s\n' "$SIZE" >>"$RESULTS"
printf 'zdr\t%s\n' "$("$ZDR" --version 2>&1 | head -1)" >>"$RESULTS"
printf 'pgbackrest\t%s\n' "$(pgbackrest version)" >>"$RESULTS"
printf 'source\t%s %s\n' "$(git rev-parse --short HEAD)" "$(git status --porcelain --untracked-files=no | wc -l) modified files" >>"$RESULTS"
printf 'binary_mtime\t%s\n' "$(date -u -r "$ZDR" +%FT%TZ)" >>"$RESULTS"

# --- per-segment latency ----------------------------------------------------------------------
if has_step segments; then
    set_archive true
    wait_archived
    rm -rf "${ROOT:?}"/segs/* "${ROOT:?}"/scratch/*
    START_LSN=$(sql "SELECT pg_current_wal_lsn()")
    FIRST=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
    NEED=$(( (SEGMENTS + 2) * 16 * 1024 * 1024 ))
    # pgbench alone (commit fsync bound here, about 1 MB/s of WAL) is too slow: with it, batches
    # of 100k-row UPDATEs of the docs table (text with real entropy, full-page images after the
    # checkpoint) in the same segments.
    log "write load (pgbench -c 1 TPC-B + 100k-row UPDATEs of docs) until $((SEGMENTS + 2)) segments after $FIRST"
    k=1
    while [ "$(sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$START_LSN')::bigint")" -lt "$NEED" ]; do
        "$PGBENCH" -n -c 1 -T 5 bench >/dev/null 2>&1 &
        sql "UPDATE docs SET n = n + 1, ts = now() WHERE id BETWEEN $k AND $((k + 99999))" bench >/dev/null
        wait
        k=$((k + 100000))
    done
    sql "SELECT pg_switch_wal()" >/dev/null
    wait_archived
    n=0
    for f in $(ls "$PGDATA/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
        [[ "$f" > "$FIRST" ]] || continue
        [ -f "$PGDATA/pg_wal/archive_status/$f.done" ] || continue
        as_pg cp "$PGDATA/pg_wal/$f" "$ROOT/segs/$f"
        n=$((n + 1))
        [ "$n" -ge "$SEGMENTS" ] && break
    done
    [ "$n" -ge "$SEGMENTS" ] || { echo "bench-wal.sh: only $n complete segments" >&2; exit 1; }
    log "copied $n segments ($(ls "$ROOT/segs" | head -1) .. $(ls "$ROOT/segs" | tail -1)); lz4 -1 ratio of the first: $(lz4 -1 -c "$ROOT/segs/$(ls "$ROOT/segs" | head -1)" | wc -c) / 16777216 bytes"
    cat "$ROOT"/segs/* >/dev/null
    sync
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    printf 'load_before_segments\t%s\n' "$LOAD" >>"$RESULTS"
    log "timing push and fetch of $n segments, one process each (load $LOAD)"
    cat >"$ROOT/segloop.sh" <<'EOF'
#!/bin/bash
# Run as the postgres OS user. Prints: op, segment, microseconds, exit code, zdr's own ms.
set -u
ZDR=$1 CFG=$2 BRCONF=$3 SEGS=$4 SCRATCH=$5 OUT=$6 CFG_NP=$7
ERR=$SCRATCH/../segloop.err
run() { # op seg cmd...
    local op=$1 seg=$2; shift 2
    local s=$EPOCHREALTIME out rc e
    out=$("$@" 2>>"$ERR"); rc=$?
    e=$EPOCHREALTIME
    local ms
    ms=$(grep -o '"milliseconds":[0-9.]*' <<<"$out" | cut -d: -f2)
    printf '%s\t%s\t%s\t%s\t%s\n' "$op" "$seg" $(( ${e/./} - ${s/./} )) "$rc" "${ms:--}" >>"$OUT"
}
zpush() { run zdr_push "$1" "$ZDR" --config "$CFG" --no-progress --json wal push --component postgres "$SEGS/$1"; }
bpush() { run pgbr_push "$1" pgbackrest "--config=$BRCONF" --stanza=bench archive-push "$SEGS/$1"; }
zget() { run zdr_fetch "$1" "$ZDR" --config "$CFG_NP" --no-progress wal fetch --component postgres "$1" "$SCRATCH/$1"; }
bget() { run pgbr_fetch "$1" pgbackrest "--config=$BRCONF" --stanza=bench archive-get "$1" "$SCRATCH/$1"; }
check() { cmp -s "$SEGS/$1" "$SCRATCH/$1" || echo "MISMATCH $2 $1" >>"$ERR"; rm -f "$SCRATCH/$1"; }
i=0
for f in $(ls "$SEGS"); do
    if [ $((i % 2)) = 0 ]; then zpush "$f"; bpush "$f"; else bpush "$f"; zpush "$f"; fi
    i=$((i + 1))
done
sync
i=0
for f in $(ls "$SEGS"); do
    if [ $((i % 2)) = 0 ]; then
        zget "$f"; check "$f" zdr; bget "$f"; check "$f" pgbr
    else
        bget "$f"; check "$f" pgbr; zget "$f"; check "$f" zdr
    fi
    i=$((i + 1))
done
# As recovery calls them, in order, with each tool's read-ahead on: zdr's default background
# prefetch (4 segments) and pgBackRest's asynchronous archive-get (archive-async=y, queue in
# spool-path). Each call's own time; the read-ahead runs beside it.
mkdir -p "$SCRATCH/zp" "$SCRATCH/bp"
for f in $(ls "$SEGS"); do
    run zdr_fetch_prefetch "$f" "$ZDR" --config "$CFG" --no-progress wal fetch --component postgres "$f" "$SCRATCH/zp/$f"
    cmp -s "$SEGS/$f" "$SCRATCH/zp/$f" || echo "MISMATCH zdr-prefetch $f" >>"$ERR"; rm -f "$SCRATCH/zp/$f"
done
sleep 5
for f in $(ls "$SEGS"); do
    run pgbr_fetch_async "$f" pgbackrest "--config=$BRCONF" --stanza=bench --archive-async=y archive-get "$f" "$SCRATCH/bp/$f"
    cmp -s "$SEGS/$f" "$SCRATCH/bp/$f" || echo "MISMATCH pgbr-async $f" >>"$ERR"; rm -f "$SCRATCH/bp/$f"
done
sleep 5
rm -rf "$SCRATCH/zp" "$SCRATCH/bp"
# Probes: where the time goes.
MISSING=000000FF000000FF000000FE
first=$(ls "$SEGS" | head -1)
for i in $(seq 20); do
    run probe_zdr_version - "$ZDR" --version
    run probe_zdr_fetch_missing - "$ZDR" --config "$CFG_NP" --no-progress wal fetch --component postgres "$MISSING" "$SCRATCH/x"
    run probe_pgbr_version - pgbackrest version
    run probe_pgbr_fetch_missing - pgbackrest "--config=$BRCONF" --stanza=bench archive-get "$MISSING" "$SCRATCH/x"
    run probe_lz4_1 - lz4 -q -1 -f "$SEGS/$first" "$SCRATCH/probe.lz4"
    run probe_sha256sum - sha256sum "$SEGS/$first"
    run probe_dd_fsync - dd if="$SEGS/$first" of="$SCRATCH/../tier/.zdr-tmp/dd-probe" bs=1M conv=fsync status=none
    rm -f "$SCRATCH/../tier/.zdr-tmp/dd-probe"
done
EOF
    chmod 755 "$ROOT/segloop.sh"
    : >"$SEGTSV"
    : >"$ROOT/segloop.err"
    chown postgres "$SEGTSV" "$ROOT/segloop.err"
    as_pg "$ROOT/segloop.sh" "$ZDR" "$CFG" "$BRCONF" "$ROOT/segs" "$ROOT/scratch" "$SEGTSV" "$ROOT/zdr-noprefetch.toml"
    if grep -q MISMATCH "$ROOT/segloop.err"; then cat "$ROOT/segloop.err" >&2; exit 1; fi
    bad=$(awk -F'\t' '$1 !~ /^probe_/ && $4 != 0' "$SEGTSV" | wc -l)
    [ "$bad" = 0 ] || { echo "bench-wal.sh: $bad commands failed:" >&2; cat "$ROOT/segloop.err" >&2; exit 1; }
    zb=0 bb=0
    for f in $(ls "$ROOT/segs"); do
        zb=$((zb + $(find "$ROOT/tier/wal" -name "$f.lz4" -printf '%s')))
        bb=$((bb + $(find "$ROOT/pgbr/repo/archive" -name "$f-*" -printf '%s')))
    done
    printf 'size_zdr_wal_%s_segments\t%s\n' "$n" "$zb" >>"$RESULTS"
    printf 'size_pgbr_wal_%s_segments\t%s\n' "$n" "$bb" >>"$RESULTS"
fi

# --- base backups and PITR --------------------------------------------------------------------
settle() {
    sql "CHECKPOINT" >/dev/null
    sync
}
# timed NAME COMMAND: run COMMAND with bash, record wall seconds and peak RSS (KiB).
timed() {
    local name=$1 cmd=$2
    settle
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    log "$name (load $LOAD): $cmd"
    /usr/bin/time -f "%e %M" -o "$ROOT/time.out" bash -o pipefail -c "$cmd" >"$ROOT/files/$name.out" 2>"$ROOT/files/$name.err" || {
        echo "bench-wal.sh: $name failed:" >&2
        cat "$ROOT/files/$name.out" "$ROOT/files/$name.err" >&2
        exit 1
    }
    local secs kb
    read -r secs kb <"$ROOT/time.out"
    printf '%s\t%s\t%s\t%s\n' "$name" "$secs" "$kb" "$LOAD" >>"$RESULTS"
    log "$name: ${secs}s, peak RSS ${kb} KiB"
}

if has_step base; then
    for rep in $(seq "$REPS"); do
        rm -rf "$ROOT/tier/postgres" "$ROOT/tier/manifests/postgres" "$ROOT/files/pgbb"
        set_archive "$ZDR_PUSH"
        sql "SELECT pg_switch_wal()" >/dev/null
        wait_archived
        timed base_zdr "'$ZDR' --config '$CFG' --no-progress backup postgres --base"
        grep -h "base backup" "$ROOT/files/base_zdr.out" >&2 || true
        printf 'size_base_zdr\t%s\n' "$(du -sb --exclude=wal "$ROOT/tier" | cut -f1)" >>"$RESULTS"
        # A little work after the base backup, archived, so recovery has WAL to replay.
        "$PGBENCH" -n -c 2 -j 2 -T 10 bench >/dev/null 2>&1
        sql "SELECT pg_switch_wal()" >/dev/null
        wait_archived
        timed pitr_zdr "'$ZDR' --config '$CFG' --no-progress pitr postgres --target latest --discard"
        RTO=$(grep -o 'RTO [0-9.]*s' "$ROOT/files/pitr_zdr.out" | head -1)
        printf 'pitr_zdr_rto\t%s\n' "$RTO" >>"$RESULTS"
        log "pitr: $RTO"

        timed base_pg_basebackup_Ft_z "'$PG_BIN/pg_basebackup' -D '$ROOT/files/pgbb' -Ft -z --checkpoint=fast"
        printf 'size_base_pg_basebackup\t%s\n' "$(du -sb "$ROOT/files/pgbb" | cut -f1)" >>"$RESULTS"
        rm -rf "$ROOT/files/pgbb"

        set_archive "$BR_PUSH"
        sql "SELECT pg_switch_wal()" >/dev/null
        wait_archived
        before=$(du -sb "$ROOT/pgbr/repo/backup" 2>/dev/null | cut -f1 || echo 0)
        timed base_pgbackrest "runuser -u postgres -- pgbackrest --config='$BRCONF' --stanza=bench --type=full backup"
        printf 'size_base_pgbackrest\t%s\n' "$(( $(du -sb "$ROOT/pgbr/repo/backup" | cut -f1) - ${before:-0} ))" >>"$RESULTS"
    done
    set_archive true
fi

# --- report -----------------------------------------------------------------------------------
{
if [ -s "$SEGTSV" ]; then
    echo "| per segment (16 MiB, one process each) | n | mean ms | median ms | zdr in-process ms (median) |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    python3 - "$SEGTSV" <<'EOF'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
ops = {}
for op, seg, us, rc, ms in rows:
    ops.setdefault(op, []).append((int(us) / 1000, ms))
for op, v in ops.items():
    t = [x[0] for x in v]
    inner = [float(x[1]) for x in v if x[1] not in ("-", "")]
    print(f"| {op} | {len(t)} | {st.mean(t):.1f} | {st.median(t):.1f} | {st.median(inner):.1f} |" if inner else
          f"| {op} | {len(t)} | {st.mean(t):.1f} | {st.median(t):.1f} | |")
def r(a, b, f):
    if a in ops and b in ops:
        x = [y[0] for y in ops[a]]; z = [y[0] for y in ops[b]]
        print(f"ratio {a}/{b}: mean {st.mean(x)/st.mean(z):.2f}x, median {st.median(x)/st.median(z):.2f}x")
print()
r("zdr_push", "pgbr_push", None)
r("zdr_fetch", "pgbr_fetch", None)
EOF
    echo
fi
echo "| step | wall s | peak RSS MiB | load average before (1, 5, 15 min) |"
echo "| --- | ---: | ---: | --- |"
awk -F'\t' 'NF == 4 { printf "| %s | %s | %.0f | %s |\n", $1, $2, $3 / 1024, $4 }' "$RESULTS"
grep -v -P '\t.*\t.*\t' "$RESULTS" | sed 's/^/    /'
} >"$ROOT/results.md"
echo
cat "$ROOT/results.md"
