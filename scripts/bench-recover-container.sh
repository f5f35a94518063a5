#!/usr/bin/env bash
# Benchmark (not a test) of the runbook's "single container failure" scenario:
# `zdr recover container` against the same recovery by hand with `docker` commands and the
# runbook's `gunzip | psql`, on the same data in the same run.
#
#   scripts/bench-recover-container.sh                        # SCALE=14 (about 210 MB), REPS=3
#   ZDR_BIN=target/release/zdr scripts/bench-recover-container.sh   # no cargo build
#   METHOD=physical SCALE=50 REFERENCE=scripts/bench-reference.sql \
#     ZDR_BIN=target/release/zdr scripts/bench-recover-container.sh  # 1.8 GB, base backup + WAL
#
# What it does:
# - images from scripts/build-test-images.sh (zdr-test/postgres, zdr-test/base);
# - a PostgreSQL container `zdrb-pg` with its data on volume `zdrb-pg-data`, published on a free
#   port, and an app container `zdrb-app` that depends on it; database `app` loaded with
#   `pgbench -i -s $SCALE` run inside the container;
# - one zdr backup (fs tier under $ROOT/tier, zstd level 1, custom format, tools inside the
#   container) and the runbook's artifact `pg_dump | gzip > app.sql.gz` of the same database;
# - each run: `docker kill` the container, remove it and its volume (the failure), then
#   zdr:     `zdr recover container db --no-backup` (remove, recreate from the recorded spec on a
#            fresh volume, wait healthy, restore with pg_restore -j <cores> + verification
#            against the manifest's facts, restart the app container, store the report);
#   by hand: `docker run` the same image on a new volume, poll `docker inspect` until healthy,
#            `gunzip -c app.sql.gz | docker exec -i zdrb-pg psql`, `docker restart zdrb-app`
#            (no verification);
#   timed from the failure handled (container and volume gone) to restored; REPS times,
#   interleaved; `/proc/loadavg` recorded beside each figure.
# - METHOD=physical: the container archives its WAL through the zdr binary mounted into it
#   (`archive_command = zdr wal push`, the tier mounted at the same path); zdr's backup is a base
#   backup (`zdr backup db --base`, pg_basebackup inside the container), then `pgbench -n -t
#   $TX` writes WAL after it, archived; zdr recovers with `--method physical` (base backup
#   streamed into the new volume, pg_verifybackup, WAL replayed to the end of the archive,
#   promoted) and the check covers pgbench_history too. The hand recovery is the same as
#   above (`pg_dump | gzip` taken after the pgbench run; its container does not archive).
#   REFERENCE=<sql> loads that file into `app` after pgbench (scripts/bench-reference.sql:
#   the 1.8 GB reference with SCALE=50).
# Results: $ROOT/results.md (printed). Containers, volumes and files are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ZDR_RECOVER_BENCH_DIR:-${TMPDIR:-/tmp}/zdr-recover-bench}
SCALE=${SCALE:-14}
REPS=${REPS:-3}
METHOD=${METHOD:-logical}
REFERENCE=${REFERENCE:-}
TX=${TX:-2000}
case $METHOD in logical | physical) ;; *) echo "METHOD is logical or physical, not $METHOD" >&2; exit 2 ;; esac
PG_IMAGE=zdr-test/postgres:current
BASE_IMAGE=zdr-test/base:current
PG=zdrb-pg
APP=zdrb-app
VOL=zdrb-pg-data
PW=bench-pw-$$
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
    docker rm -f "$PG" "$APP" >/dev/null 2>&1 || true
    for v in $(docker volume ls -q | grep "^$VOL" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
    rm -rf "$ROOT/tier" "$ROOT/app.sql.gz" "$ROOT/zdr.toml"
}
trap cleanup EXIT

for image in "$PG_IMAGE" "$BASE_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || bash scripts/build-test-images.sh
done
if [[ -n $ZDR_BIN_ARG ]]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    cargo build --release -p zdr-cli >&2
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
cleanup
mkdir -p "$ROOT/tier/.zdr-tmp"
chmod 755 "$ROOT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# The runbook's container: no archiving (the hand recovery, and the logical method).
start_pg_plain() {
    docker run -d --name "$PG" -e POSTGRES_PASSWORD="$PW" -e POSTGRES_DB=app \
        -v "$VOL:/var/lib/postgresql/data" -p "127.0.0.1:$PORT:5432" "$PG_IMAGE" >/dev/null
}
start_pg() {
    if [[ $METHOD == logical ]]; then
        start_pg_plain
        return
    fi
    # The server's user in the image (uid 999) runs archive_command: the tier is its.
    chown -R 999:999 "$ROOT/tier"
    docker run -d --name "$PG" -e POSTGRES_PASSWORD="$PW" -e POSTGRES_DB=app \
        -v "$VOL:/var/lib/postgresql/data" -p "127.0.0.1:$PORT:5432" \
        -v "$ZDR:/usr/local/bin/zdr:ro" -v "$ROOT/zdr.toml:/etc/zdr/zdr.toml:ro" \
        -v "$ROOT/tier:$ROOT/tier" "$PG_IMAGE" postgres -c wal_level=replica -c archive_mode=on \
        -c max_wal_size=4GB \
        -c "archive_command=/usr/local/bin/zdr --config /etc/zdr/zdr.toml --no-progress wal push --component db %p" \
        >/dev/null
}
wait_healthy() {
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null) == healthy ]]; do sleep 0.1; done
}

cat >"$ROOT/zdr.toml" <<TOML
primary = "local"
[pipeline]
compression = "zstd"
level = 1
[tiers.local]
type = "fs"
root = "$ROOT/tier"
[components.db]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "postgres"
database = "app"
runner = "docker"
container = "$PG"
dependents = ["$APP"]
TOML
chmod 644 "$ROOT/zdr.toml"
export ZDR_COMPONENTS__DB__PASSWORD=$PW

log "PostgreSQL container on 127.0.0.1:$PORT ($METHOD), pgbench -i -s $SCALE${REFERENCE:+ and $REFERENCE}"
start_pg
docker run -d --name "$APP" "$BASE_IMAGE" sh -c "trap 'exit 0' TERM; while :; do sleep 0.2; done" >/dev/null
wait_healthy "$PG"
docker exec "$PG" pgbench -q -i -s "$SCALE" -U postgres app >/dev/null 2>&1
if [[ -n $REFERENCE ]]; then
    docker exec -i "$PG" psql -X -q -U postgres -d app -v ON_ERROR_STOP=1 <"$REFERENCE" >/dev/null
fi
count() { docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT count(*) FROM pgbench_history)"; }
if [[ $METHOD == physical ]]; then
    "$ZDR" --config "$ROOT/zdr.toml" --no-progress backup db --base >/dev/null
    # WAL written after the base backup, replayed by every recovery; all of it archived.
    docker exec "$PG" pgbench -n -t "$TX" -c 2 -U postgres app >/dev/null 2>&1
    seg=$(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s")
    until [[ $(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver") == t ]]; do sleep 0.2; done
else
    "$ZDR" --config "$ROOT/zdr.toml" --no-progress backup db >/dev/null
fi
SIZE=$(docker exec "$PG" psql -X -At -U postgres -d app -c "SELECT pg_size_pretty(pg_database_size('app'))")
ROWS=$(count)
log "database app: $SIZE, $ROWS rows in pgbench_accounts/pgbench_history"
docker exec "$PG" pg_dump -U postgres app | gzip >"$ROOT/app.sql.gz"
log "zdr backup and app.sql.gz ($(du -h "$ROOT/app.sql.gz" | cut -f1)) made"

fail() {
    docker kill "$PG" >/dev/null
    docker rm -f "$PG" >/dev/null
    docker volume rm "$VOL" >/dev/null
}
RESULTS=$ROOT/results.tsv
: >"$RESULTS"
for rep in $(seq 1 "$REPS"); do
    fail
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(now)
    "$ZDR" --config "$ROOT/zdr.toml" --no-progress recover container db --no-backup --method "$METHOD" >"$ROOT/report.md"
    t1=$(now)
    rows=$(count)
    [[ $rows == "$ROWS" ]] || { echo "zdr recovery restored $rows rows, not $ROWS" >&2; exit 1; }
    printf 'zdr recover container (%s)\t%s\t%s\t%s\n' "$METHOD" "$rep" "$(secs "$t0" "$t1")" "$load" >>"$RESULTS"
    grep -E '^\| [0-9]+ \|' "$ROOT/report.md" | sed 's/^/    /' >&2
    log "zdr run $rep: $(secs "$t0" "$t1") s"
    for v in $(docker volume ls -q | grep "^$VOL-failed" || true); do docker volume rm "$v" >/dev/null; done

    fail
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(now)
    start_pg_plain
    wait_healthy "$PG"
    gunzip -c "$ROOT/app.sql.gz" | docker exec -i "$PG" psql -X -q -U postgres -d app >/dev/null
    docker restart -t 10 "$APP" >/dev/null
    t1=$(now)
    rows=$(count)
    [[ $rows == "$ROWS" ]] || { echo "hand recovery restored $rows rows, not $ROWS" >&2; exit 1; }
    printf 'by hand (docker run + gunzip | psql)\t%s\t%s\t%s\n' "$rep" "$(secs "$t0" "$t1")" "$load" >>"$RESULTS"
    log "by hand run $rep: $(secs "$t0" "$t1") s"
done

python3 - "$RESULTS" "$SIZE" "$SCALE" >"$ROOT/results.md" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for what, rep, secs, load in rows:
    by.setdefault(what, []).append((float(secs), load))
print(f"Single container recovery, database of {sys.argv[2]} (pgbench -s {sys.argv[3]}); seconds from the failed container and volume removed to restored\n")
print("| recovery | runs (s) | median (s) | loadavg before each run |")
print("|---|---|---|---|")
med = {}
for what, runs in by.items():
    med[what] = statistics.median(s for s, _ in runs)
    print(f"| {what} | {', '.join(f'{s:.2f}' for s, _ in runs)} | {med[what]:.2f} | {'; '.join(l for _, l in runs)} |")
z = next((v for k, v in med.items() if k.startswith("zdr")), None); h = med.get("by hand (docker run + gunzip | psql)")
if z and h:
    print(f"\nzdr / by hand: {z / h:.2f}x")
PY
cat "$ROOT/results.md"
