#!/usr/bin/env bash
# The fault suite: kills zdr at every commit point (failpoints, ZDR_FAILPOINT) and at random
# instants, flips bytes in every kind of stored file, and takes a tier away, then checks what
# an operator would check after each injection:
#   - live data intact and connectable (a fingerprint of the rows before and after; no
#     database refusing connections),
#   - no incomplete backup listed (every listed backup verifies),
#   - damage caught and named (`zdr verify` exit 3),
#   - the next run succeeds (and removes what the killed one left).
# It prints one line per injection and a summary table; exit 0 only when every check passed.
#
#   bash scripts/faults.sh                 # builds zdr (debug) unless ZDR_BIN is given
#   ZDR_BIN=target/release/zdr REPS=2 bash scripts/faults.sh
#
# Needs PostgreSQL 15 server binaries (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [[ -z ${ZDR_BIN:-} ]]; then
    cargo build -q --locked -p zdr-cli
    ZDR_BIN=$PWD/target/debug/zdr
fi
ZDR_BIN=$(realpath "$ZDR_BIN")
# The n8n API double as a process (section 20): no n8n server can be installed here.
if [[ -z ${N8N_DOUBLE_BIN:-} ]]; then
    cargo build -q --locked -p zdr-tests --bin zdr-n8n-double
    N8N_DOUBLE_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/zdr-n8n-double
fi
N8N_DOUBLE_BIN=$(realpath "$N8N_DOUBLE_BIN")

WORK=$(mktemp -d /tmp/zdr-faults.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then AS_PG=(runuser -u postgres --); fi

cleanup() {
    umount "$WORK/small" 2>/dev/null || true
    if [[ -f $WORK/s3/weed.pid ]]; then kill -9 "$(cat "$WORK/s3/weed.pid")" 2>/dev/null || true; fi
    for d in "$WORK"/recovery/*/; do
        if [[ -d $d ]]; then "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true; fi
    done
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    [[ -f $WORK/redis/redis.pid ]] && kill "$(cat "$WORK/redis/redis.pid")" 2>/dev/null || true
    for f in "$WORK"/n8n-*.pid; do
        if [[ -f $f ]]; then kill -9 "$(cat "$f")" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- a throwaway cluster, a config tree, two local tiers --------------------------------
mkdir -p "$WORK/pg" "$WORK/live/nginx" "$WORK/tiers"
[[ $(id -u) -eq 0 ]] && chown postgres "$WORK/pg"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U zdr --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C.UTF-8 -N >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
psql_() { "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$WORK/pg" -p "$PORT" -U zdr "$@"; }
psql_ -d postgres -c "CREATE DATABASE app"
psql_ -d app -c "CREATE TABLE orders (id int PRIMARY KEY, item text);
    INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"
for i in $(seq 1 40); do echo "setting_$i = $RANDOM" >"$WORK/live/nginx/site_$i.conf"; done
head -c 3000000 /dev/urandom >"$WORK/live/blob.bin"

mkdir -p "$WORK/redis"
RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REDIS_START="\"redis-server\", \"--port\", \"$RPORT\", \"--bind\", \"127.0.0.1\", \"--dir\", \"$WORK/redis\", \"--save\", \"\", \"--appendonly\", \"no\", \"--daemonize\", \"yes\", \"--pidfile\", \"$WORK/redis/redis.pid\""
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" --appendonly no \
    --daemonize yes --pidfile "$WORK/redis/redis.pid" >/dev/null
rcli() { redis-cli -p "$RPORT" "$@"; }
for _ in $(seq 1 100); do [[ $(rcli PING 2>/dev/null) == PONG ]] && break; sleep 0.05; done
for i in $(seq 1 2000); do echo "SET key:$i v$i"; done | rcli >/dev/null

cat >"$WORK/zdr.toml" <<EOF
primary = "local"
replicate_to = ["replica"]
[tiers.local]
type = "fs"
root = "$WORK/tiers/local"
[tiers.replica]
type = "fs"
root = "$WORK/tiers/replica"
[components.configs]
type = "files"
path = "$WORK/live"
[components.postgres]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "app"
bin_dir = "$PG_BIN"
[components.redis]
type = "redis"
url = "redis://127.0.0.1:$RPORT"
data_dir = "$WORK/redis"
start_command = [$REDIS_START]
EOF

zdr() { "$ZDR_BIN" --config "$WORK/zdr.toml" --no-progress "$@"; }
# Start zdr in the background; BGPID is the zdr process itself (a function run with `&` would
# be a subshell, and killing that would leave zdr running).
zdr_bg() {
    "$ZDR_BIN" --config "$WORK/zdr.toml" --no-progress "$@" >/dev/null 2>&1 &
    BGPID=$!
}
# zdr_killed LO HI ARGS...: zdr ARGS in the background, SIGKILLed after a random delay between
# LO and HI seconds (left in `delay`, for the record), and reaped.
zdr_killed() {
    delay=$(python3 -c "import random; print(round(random.uniform($1, $2), 3))")
    shift 2
    zdr_bg "$@"
    sleep "$delay"
    kill -9 "$BGPID" 2>/dev/null || true
    wait "$BGPID" 2>/dev/null || true
}
# The rows of the live database. A connection made while the server still finishes the
# killed run's last command (a rename waiting for sessions to end) can be refused once: the
# check retries for a few seconds, as any client would.
fingerprint() {
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        psql_ -d app -c "SELECT count(*) || ':' || md5(string_agg(item, ',' ORDER BY id)) FROM orders" 2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}
refusing() { psql_ -d postgres -c "SELECT count(*) FROM pg_database WHERE NOT datallowconn AND NOT datistemplate"; }
listed() { zdr --json list 2>/dev/null | python3 -c 'import json,sys; print(sum(len(t["backups"]) for t in json.load(sys.stdin)["tiers"]))'; }

N=0
FAILED=0
SEGNO=64
WAL_SRC=$WORK/wal-src
# record CATEGORY INJECTION RESULT NOTE
record() {
    N=$((N + 1))
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
    [[ $3 == ok ]] || FAILED=$((FAILED + 1))
    printf '%4d %-10s %-44s %-4s %s\n' "$N" "$1" "$2" "$3" "$4"
}

# After a killed run: every listed backup verifies (none incomplete), and the next backup of
# COMPONENT succeeds.
after_kill_checks() {
    local listed_ok=ok note=""
    if ! zdr verify --tier local --component "$1" >/dev/null 2>&1; then listed_ok=FAIL; note="a listed backup does not verify"; fi
    if ! zdr backup "$1" >/dev/null 2>&1; then listed_ok=FAIL; note="$note; the next backup failed"; fi
    echo "$listed_ok|$note"
}

# After a recovery killed at an instant: whether it had already completed (it exited 0, or
# it left no unfinished-recovery marker in MARKER_DIR... and CONTAINER runs again). A new
# recovery would then rightly refuse the healthy container, so only the state is checked.
# completed_recovery EXIT_STATUS CONTAINER MARKER_DIR...
completed_recovery() {
    local status=$1 c=$2
    shift 2
    [[ $status -eq 0 ]] && return 0
    [[ $(find "$@" -type f 2>/dev/null | wc -l) -eq 0 ]] &&
        [[ $(docker inspect -f '{{.State.Running}}' "$c" 2>/dev/null) == true ]]
}

zdr backup configs --replicate >/dev/null
zdr backup postgres --replicate >/dev/null

# --- 1. backups killed at their commit points ------------------------------------------
for rep in $(seq 1 $((5 * REPS))); do
    for comp in configs postgres; do
        for point in artifact-before-commit artifact-before-sidecar; do
            before=$(listed)
            ZDR_FAILPOINT=$point zdr backup "$comp" >/dev/null 2>&1 && true
            after=$(listed)
            r=$(after_kill_checks "$comp")
            res=${r%%|*}
            [[ $after -eq $before ]] || { res=FAIL; r="|a killed backup is listed"; }
            record backup "$comp killed at $point" "$res" "${r#*|}"
        done
    done
done

# --- 2. backups killed at random instants ------------------------------------------------
for rep in $(seq 1 $((15 * REPS))); do
    for comp in configs postgres; do
        zdr_killed 0.02 0.6 backup "$comp"
        r=$(after_kill_checks "$comp")
        record backup "$comp SIGKILL after ${delay}s" "${r%%|*}" "${r#*|}"
    done
done

# --- 3. restores killed at every step of the swap -----------------------------------------
zdr backup postgres >/dev/null
psql_ -d app -c "DELETE FROM orders WHERE id > 15000"
for rep in $(seq 1 $((4 * REPS))); do
    for point in pg-swap-after-terminate pg-swap-after-rename-live pg-swap-after-rename-side \
        pg-swap-before-commit; do
        live=$(fingerprint)
        ZDR_FAILPOINT=$point zdr restore postgres >/dev/null 2>&1 && true
        res=ok note=""
        now=$(fingerprint 2>/dev/null || echo unreachable)
        [[ $now == "$live" ]] || { res=FAIL; note="live data changed or unreachable: $now"; }
        [[ $(refusing) == 0 ]] || { res=FAIL; note="$note; a database refuses connections"; }
        record restore "postgres killed at $point" "$res" "$note"
    done
    # Killed right after the commit: the restore is complete; the next run is clean.
    ZDR_FAILPOINT=pg-swap-after-commit zdr restore postgres >/dev/null 2>&1 && true
    res=ok note=""
    [[ $(psql_ -d app -c "SELECT count(*) FROM orders") == 20000 ]] || { res=FAIL; note="not restored"; }
    zdr restore postgres >/dev/null 2>&1 || { res=FAIL; note="$note; the next restore failed"; }
    left=$(psql_ -d postgres -c "SELECT count(*) FROM pg_database WHERE datname LIKE '%zdr_restore%'")
    [[ $left == 0 ]] || { res=FAIL; note="$note; side databases left behind"; }
    record restore "postgres killed at pg-swap-after-commit" "$res" "$note"
    psql_ -d app -c "DELETE FROM orders WHERE id > 15000"
done

# --- 4. restores killed at random instants (load, verification, swap) ----------------------
for rep in $(seq 1 $((15 * REPS))); do
    live=$(fingerprint)
    zdr_killed 0.05 1.5 restore postgres
    res=ok note=""
    now=$(fingerprint 2>/dev/null || echo unreachable)
    restored=$(psql_ -d app -c "SELECT count(*) FROM orders" 2>/dev/null || echo unreachable)
    if [[ $now != "$live" && $restored != 20000 ]]; then res=FAIL; note="live is neither the old nor the restored data: $now"; fi
    [[ $(refusing) == 0 ]] || { res=FAIL; note="$note; a database refuses connections"; }
    zdr restore postgres >/dev/null 2>"$WORK/err" ||
        { res=FAIL; note="$note; the next restore failed: $(tail -c 300 "$WORK/err" | tr '\n' ' ')"; }
    record restore "postgres SIGKILL after ${delay}s" "$res" "$note"
    psql_ -d app -c "DELETE FROM orders WHERE id > 15000"
done

# --- 5. rollbacks killed mid-swap -------------------------------------------------------
for rep in $(seq 1 $((5 * REPS))); do
    for point in pg-swap-after-rename-live pg-swap-before-commit; do
        live=$(fingerprint)
        ZDR_FAILPOINT=$point zdr rollback postgres >/dev/null 2>&1 && true
        res=ok note=""
        now=$(fingerprint 2>/dev/null || echo unreachable)
        [[ $now == "$live" ]] || { res=FAIL; note="live changed: $now"; }
        [[ $(refusing) == 0 ]] || { res=FAIL; note="$note; a database refuses connections"; }
        record rollback "postgres killed at $point" "$res" "$note"
    done
done
zdr rollback postgres >/dev/null

# --- 6. replication killed at random instants ----------------------------------------------
for rep in $(seq 1 $((10 * REPS))); do
    zdr backup configs >/dev/null
    zdr_killed 0.01 0.4 replicate
    res=ok note=""
    zdr verify --tier replica >/dev/null 2>&1 || { res=FAIL; note="a partial copy is listed on the replica"; }
    zdr replicate >/dev/null 2>&1 || { res=FAIL; note="$note; the next replication failed"; }
    zdr verify --tier replica >/dev/null 2>&1 || { res=FAIL; note="$note; replica does not verify after the re-run"; }
    record replicate "SIGKILL after ${delay}s" "$res" "$note"
done

# --- 7. bytes flipped in every kind of stored file ------------------------------------------
flip() { # FILE: flip one byte at a random offset
    python3 - "$1" <<'PY'
import os, random, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = random.randrange(len(b))
b[i] ^= random.randrange(1, 256)
open(p, "wb").write(bytes(b))
PY
}
KEY=$(zdr --json backup configs --replicate | python3 -c 'import json,sys; m=json.load(sys.stdin)["backup"]; print(m["id"] + " " + max(m["artifacts"], key=lambda a: a["size"])["key"])')
ID=${KEY%% *}
ART=$WORK/tiers/local/${KEY#* }
MAN=$WORK/tiers/local/manifests/configs/$ID.json
for rep in $(seq 1 $((10 * REPS))); do
    for kind in artifact artifact-sidecar manifest manifest-sidecar; do
        case $kind in
        artifact) f=$ART ;;
        artifact-sidecar) f=$ART.sha256 ;;
        manifest) f=$MAN ;;
        manifest-sidecar) f=$MAN.sha256 ;;
        esac
        cp "$f" "$WORK/saved"
        flip "$f"
        res=ok note=""
        if cmp -s "$f" "$WORK/saved"; then note="(flip was a no-op)"; fi
        code=0
        zdr verify --tier local --component configs >/dev/null 2>&1 || code=$?
        [[ $code -eq 3 ]] || { res=FAIL; note="verify exit $code, not 3"; }
        # The restore falls back to the replica's intact copy.
        rm -rf "$WORK/restored"
        zdr restore configs --backup "$ID" --to "$WORK/restored" >/dev/null 2>&1 ||
            { res=FAIL; note="$note; restore from the replica's intact copy failed"; }
        cp "$WORK/saved" "$f"
        record flip "$kind, random byte" "$res" "$note"
    done
done

# --- 8. WAL pushes killed at their commit points, WAL copies damaged ------------------------
mkdir -p "$WAL_SRC"
for rep in $(seq 1 $((5 * REPS))); do
    for point in artifact-before-commit artifact-before-sidecar; do
        SEGNO=$((SEGNO + 1))
        seg=$(printf '00000001%016X' "$SEGNO")
        head -c $((16 << 20)) /dev/urandom >"$WAL_SRC/$seg"
        ZDR_FAILPOINT=$point zdr wal push --component postgres "$WAL_SRC/$seg" >/dev/null 2>&1 && true
        res=ok note=""
        # PostgreSQL retries the push: it must succeed, and the segment come back whole.
        zdr wal push --component postgres "$WAL_SRC/$seg" >/dev/null 2>&1 ||
            { res=FAIL; note="the retried push failed"; }
        rm -f "$WORK/fetched"
        zdr wal fetch --component postgres "$seg" "$WORK/fetched" >/dev/null 2>&1 ||
            { res=FAIL; note="$note; fetch failed"; }
        cmp -s "$WAL_SRC/$seg" "$WORK/fetched" || { res=FAIL; note="$note; fetched bytes differ"; }
        record wal "push killed at $point" "$res" "$note"
    done
done
code=0
zdr verify postgres --wal >/dev/null 2>&1 || code=$?
res=ok note=""
[[ $code -eq 0 ]] || { res=FAIL; note="verify --wal exit $code after the retried pushes"; }
record wal "archive verifies after killed pushes" "$res" "$note"
for rep in $(seq 1 $((5 * REPS))); do
    seg=$(printf '00000001%016X' "$SEGNO")
    stored=$(find "$WORK/tiers/local/wal" -name "$seg.lz4" | head -n 1)
    cp "$stored" "$WORK/saved"
    flip "$stored"
    res=ok note=""
    code=0
    zdr verify postgres --wal >/dev/null 2>&1 || code=$?
    [[ $code -eq 3 ]] || { res=FAIL; note="verify --wal exit $code, not 3"; }
    rm -f "$WORK/fetched"
    zdr wal fetch --component postgres "$seg" "$WORK/fetched" >/dev/null 2>&1 ||
        { res=FAIL; note="$note; fetch did not fall back to the replica"; }
    cmp -s "$WAL_SRC/$seg" "$WORK/fetched" || { res=FAIL; note="$note; fetched bytes differ"; }
    cp "$WORK/saved" "$stored"
    record wal "segment copy, random byte" "$res" "$note"
done

# --- 9. redis restores killed while the server is down -----------------------------------------
zdr backup redis >/dev/null
for rep in $(seq 1 $((5 * REPS))); do
    for point in redis-after-stop redis-after-swap; do
        rcli SET written:after "$rep-$point" >/dev/null
        ZDR_FAILPOINT=$point zdr restore redis >/dev/null 2>&1 && true
        res=ok note=""
        # The next command on the component brings the server back.
        zdr backup redis >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="the next backup failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(rcli PING 2>/dev/null) == PONG ]] || { res=FAIL; note="$note; redis is still down"; }
        # What was in memory before the killed restore is in its safety copy.
        copy=$(zdr --json list --component redis | python3 -c 'import json,sys; b=[m for m in json.load(sys.stdin)["tiers"][0]["backups"] if m["schedule"]=="pre-restore"]; print(b[-1]["id"])')
        zdr restore redis --backup "$copy" --no-safety-copy >/dev/null 2>&1 ||
            { res=FAIL; note="$note; restoring the safety copy failed"; }
        [[ $(rcli GET written:after) == "$rep-$point" ]] || { res=FAIL; note="$note; the in-memory key was lost"; }
        record redis "restore killed at $point" "$res" "$note"
    done
done

# --- 10. a tier taken away (an S3 endpoint where nothing listens) -----------------------------
DEAD=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$WORK/zdr.toml" "$WORK" "$DEAD" <<'PY'
import sys
p, work, port = sys.argv[1:]
t = open(p).read().replace(
    f'[tiers.replica]\ntype = "fs"\nroot = "{work}/tiers/replica"',
    f'[tiers.replica]\ntype = "s3"\nbucket = "zdr-gone"\nendpoint = "http://127.0.0.1:{port}"\n'
    'access_key_id = "x"\nsecret_access_key = "y"')
open(p, "w").write(t)
PY
code=0
zdr list >/dev/null 2>&1 || code=$?
res=ok note=""
[[ $code -eq 1 ]] || { res=FAIL; note="list exit $code, not 1"; }
out=$(zdr list 2>/dev/null || true)
grep -q "tier local:" <<<"$out" || { res=FAIL; note="$note; the local tier is hidden"; }
record tier "replica unreachable: list" "$res" "$note"
code=0
zdr verify >/dev/null 2>&1 || code=$?
res=ok note=""
[[ $code -eq 1 ]] || { res=FAIL; note="verify exit $code, not 1"; }
record tier "replica unreachable: verify" "$res" "$note"
code=0
zdr replicate >/dev/null 2>&1 || code=$?
res=ok note=""
[[ $code -eq 1 ]] || { res=FAIL; note="replicate exit $code, not 1"; }
record tier "replica unreachable: replicate" "$res" "$note"

# --- 11. a full disk -------------------------------------------------------------------------
# A 3 MiB tmpfs tier (root only) and a config tree that does not fit: each backup fails with a
# storage error, lists nothing, leaves no temporary file; with room again, the next succeeds.
mkdir -p "$WORK/small"
if mount -t tmpfs -o size=3m tmpfs "$WORK/small" 2>/dev/null; then
    python3 - "$WORK/zdr.toml" "$WORK" <<'PY'
import sys
p, work = sys.argv[1:]
t = open(p).read().replace(f'root = "{work}/tiers/local"', f'root = "{work}/small"')
open(p, "w").write(t.replace('replicate_to = ["replica"]', 'replicate_to = []'))
PY
    for rep in $(seq 1 $((5 * REPS))); do
        head -c 4000000 /dev/urandom >"$WORK/live/big.bin"
        code=0
        zdr backup configs >/dev/null 2>&1 || code=$?
        res=ok note=""
        [[ $code -eq 1 ]] || { res=FAIL; note="exit $code, not 1"; }
        n=$(find "$WORK/small/.zdr-tmp" -type f 2>/dev/null | wc -l)
        [[ $n -eq 0 ]] || { res=FAIL; note="$note; $n temporary file(s) left"; }
        [[ $(listed) -eq 0 ]] || { res=FAIL; note="$note; a failed backup is listed"; }
        rm -f "$WORK/live/big.bin"
        zdr backup configs >/dev/null 2>&1 || { res=FAIL; note="$note; the next backup failed"; }
        find "$WORK/small" -mindepth 1 -delete
        record disk "backup onto a full disk" "$res" "$note"
    done
    umount "$WORK/small"
    python3 - "$WORK/zdr.toml" "$WORK" <<'PY'
import sys
p, work = sys.argv[1:]
t = open(p).read().replace(f'root = "{work}/small"', f'root = "{work}/tiers/local"')
open(p, "w").write(t)
PY
else
    echo "(cannot mount a tmpfs: the full-disk injections need root)"
fi

# --- 12. config-files restores killed while they put files in place -------------------------
# The restore goes into the live tree with --overwrite; killed before the moves, after the
# first replaced file was kept aside (the live file then missing), after the first file went in,
# or at a random instant. The next restore completes it: the tree equals the backup, nothing is
# left beside it but the kept versions.
tree_sum() { (cd "$WORK/live" && find . -type f ! -name big.bin -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
rm -f "$WORK/live/big.bin"
zdr backup configs >/dev/null
want=$(tree_sum)
for rep in $(seq 1 $((4 * REPS))); do
    for point in files-restore-before-moves files-restore-after-aside files-restore-after-first-move random; do
        for i in 1 2 3 4 5; do echo "changed $rep $RANDOM" >"$WORK/live/nginx/site_$i.conf"; done
        if [[ $point == random ]]; then
            zdr_killed 0.01 0.3 restore configs --to "$WORK/live" --overwrite
            label="SIGKILL after ${delay}s"
        else
            ZDR_FAILPOINT=$point zdr restore configs --to "$WORK/live" --overwrite >/dev/null 2>&1 && true
            label="killed at $point"
        fi
        res=ok note=""
        zdr restore configs --to "$WORK/live" --overwrite >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="the next restore failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(tree_sum) == "$want" ]] || { res=FAIL; note="$note; the tree differs from the backup"; }
        n=$(find "$WORK" -maxdepth 1 -name '.zdr-restore-*' | wc -l)
        [[ $n -eq 0 ]] || { res=FAIL; note="$note; $n staging entries left beside the tree"; }
        find "$WORK" -maxdepth 1 -name '.zdr-replaced-*' -exec rm -rf {} +
        record files "restore $label" "$res" "$note"
    done
done

# --- 13. point-in-time recoveries killed ------------------------------------------------------
# The cluster archives through zdr (component pg2: its own WAL prefix); each recovery is killed
# once its instance is up, or at a random instant; the next `pitr` stops and removes what the
# killed one left, recovers, and leaves nothing behind (--discard).
if [[ $(id -u) -eq 0 ]]; then chown -R postgres "$WORK/tiers"; fi
mkdir -p "$WORK/recovery"
if [[ $(id -u) -eq 0 ]]; then chown postgres "$WORK/recovery"; fi
cat >>"$WORK/zdr.toml" <<TOML
[components.pg2]
type = "postgres"
host = "127.0.0.1"
port = $PORT
user = "zdr"
database = "app"
bin_dir = "$PG_BIN"
[components.pg2.wal]
tiers = ["local"]
run_as = "postgres"
recovery_dir = "$WORK/recovery"
recovery_timeout_secs = 120
TOML
chmod 644 "$WORK/zdr.toml"
psql_ -d postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$ZDR_BIN --config $WORK/zdr.toml --no-progress wal push --component pg2 %p'"
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -w -m fast restart >/dev/null
zdr backup pg2 --base >/dev/null
psql_ -d app -c "INSERT INTO orders SELECT g, 'pitr' FROM generate_series(900001, 900100) g"
zdr check pg2 >/dev/null
recovery_servers() { { pgrep -f -- "-D $WORK/recovery" || true; } | wc -l; }
for rep in $(seq 1 $((4 * REPS))); do
    for point in pitr-after-start random; do
        if [[ $point == random ]]; then
            zdr_killed 0.2 2.5 pitr pg2 --target latest --discard
            label="SIGKILL after ${delay}s"
        else
            ZDR_FAILPOINT=$point zdr pitr pg2 --target latest --discard >/dev/null 2>&1 && true
            label="killed at $point"
        fi
        res=ok note=""
        live=$(fingerprint 2>/dev/null || echo unreachable)
        [[ $live != unreachable ]] || { res=FAIL; note="the live cluster is unreachable"; }
        zdr pitr pg2 --target latest --discard >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="$note; the next pitr failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        left=$(find "$WORK/recovery" -mindepth 1 -maxdepth 1 | wc -l)
        [[ $left -eq 0 ]] || { res=FAIL; note="$note; $left entries left in the recovery directory"; }
        [[ $(recovery_servers) -eq 0 ]] || { res=FAIL; note="$note; a recovery server still runs"; }
        record pitr "recovery $label" "$res" "$note"
    done
done
psql_ -d postgres -c "ALTER SYSTEM SET archive_mode = off"
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -w -m fast restart >/dev/null

# --- 14. the S3 server killed while zdr writes to it --------------------------------------------
# SeaweedFS (`weed mini`) as the replica tier, killed (SIGKILL) at a random instant of a
# replication of a 24 MB backup (multipart uploads), then started again. The replica must list
# only complete backups, the next replication must succeed, and after it (grace 0) no unfinished
# multipart upload may remain on the server (listed with curl's own SigV4 signing).
WEED=$(command -v weed || true)
if [[ -n $WEED ]]; then
    S3DIR=$WORK/s3
    mkdir -p "$S3DIR"
    S3KEY=ZDRFAULTS$RANDOM$RANDOM
    S3SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    printf '{"identities": [{"name": "zdr", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
        "$S3KEY" "$S3SECRET" >"$S3DIR/s3.json"
    # A free port P whose gRPC twin P+10000 is free too.
    freeport() {
        python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 50000:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError:
            pass'
    }
    WP=()
    for _ in 1 2 3 4 5; do WP+=("$(freeport)"); done
    start_weed() {
        # `exec` all the way down: the pid recorded is the server's own, so stop_weed kills it.
        (cd "$S3DIR" && exec env TMPDIR="$S3DIR" setsid "$WEED" mini -dir="$S3DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -s3.config="$S3DIR/s3.json" -bucket=zdr-faults -s3.autoCreateBucket=false -webdav=false \
            -admin.ui=false -master.telemetry=false -master.resumeState=false \
            -filer.localSocket="$S3DIR/filer.sock" -s3.localSocket="$S3DIR/s3.sock" \
            -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=64 -volume.max=32 \
            -master.port="${WP[0]}" -master.port.grpc=$((WP[0] + 10000)) \
            -volume.port="${WP[1]}" -volume.port.grpc=$((WP[1] + 10000)) \
            -filer.port="${WP[2]}" -filer.port.grpc=$((WP[2] + 10000)) \
            -s3.port="${WP[3]}" -s3.port.grpc=$((WP[3] + 10000)) \
            -admin.port="${WP[4]}" -admin.port.grpc=$((WP[4] + 10000))) \
            >>"$S3DIR/weed.log" 2>&1 &
        echo $! >"$S3DIR/weed.pid"
        local i
        for i in $(seq 1 600); do
            if curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
                --user "$S3KEY:$S3SECRET" "http://127.0.0.1:${WP[3]}/zdr-faults?list-type=2" 2>/dev/null |
                grep -q 200; then
                return 0
            fi
            sleep 0.1
        done
        echo "SeaweedFS did not start (see $S3DIR/weed.log)" >&2
        return 1
    }
    stop_weed() {
        local pid
        pid=$(cat "$S3DIR/weed.pid")
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$S3DIR/filer.sock" "$S3DIR/s3.sock"
        # An injection whose server did not die tests nothing.
        if curl -s -o /dev/null "http://127.0.0.1:${WP[3]}/"; then
            echo "faults: the S3 server still answers after SIGKILL of pid $pid" >&2
            return 1
        fi
    }
    uploads() {
        curl -s --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3KEY:$S3SECRET" \
            "http://127.0.0.1:${WP[3]}/zdr-faults?uploads=" | { grep -o '<UploadId>' || true; } | wc -l
    }
    if start_weed; then
        python3 - "$WORK/zdr.toml" "${WP[3]}" "$S3KEY" "$S3SECRET" <<'PY'
import re, sys
p, port, key, secret = sys.argv[1:]
t = open(p).read()
t = t.replace('replicate_to = []', 'replicate_to = ["replica"]')
t = re.sub(r'\[tiers\.replica\]\n(?:[a-z_]+ = .*\n)+',
           f'[tiers.replica]\ntype = "s3"\nbucket = "zdr-faults"\nendpoint = "http://127.0.0.1:{port}"\n'
           f'root = "/zdr"\naccess_key_id = "{key}"\nsecret_access_key = "{secret}"\n', t)
open(p, "w").write(t)
PY
        head -c 24000000 /dev/urandom >"$WORK/live/big.bin"
        for rep in $(seq 1 $((5 * REPS))); do
            zdr backup configs >/dev/null
            delay=$(python3 -c "import random; print(round(random.uniform(0.05, 1.2), 3))")
            zdr_bg replicate
            pid=$BGPID
            sleep "$delay"
            stop_weed
            wait "$pid" 2>/dev/null || true
            res=ok note=""
            start_weed || { res=FAIL; note="SeaweedFS did not come back"; }
            zdr verify --tier replica >/dev/null 2>&1 || { res=FAIL; note="$note; an incomplete backup is listed on S3"; }
            ZDR_PIPELINE__SWEEP_GRACE_SECS=0 zdr replicate >/dev/null 2>"$WORK/err" ||
                { res=FAIL; note="$note; the next replication failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
            zdr verify --tier replica >/dev/null 2>&1 || { res=FAIL; note="$note; S3 does not verify after the re-run"; }
            n=$(uploads)
            [[ $n -eq 0 ]] || { res=FAIL; note="$note; $n unfinished multipart upload(s) left"; }
            record s3 "server SIGKILL after ${delay}s of a replication" "$res" "$note"
        done
        rm -f "$WORK/live/big.bin"
        stop_weed
    fi
else
    echo "(no SeaweedFS 'weed' on PATH: the S3 injections are skipped)"
fi

# --- 15. container recoveries killed at every step and at random instants -------------------
# (section 16, full-system recoveries, runs on the same container below)
# A PostgreSQL container (the image of scripts/build-test-images.sh) with an app container
# depending on it, under its own config. Each injection: the container crashes (SIGKILL),
# `zdr recover container` is killed at a step's failpoint or at a random instant, then run
# again: it must succeed, the rows must be those backed up, no recovery marker, copy helper or
# drill copy may be left, and the app container must run.
if command -v docker >/dev/null && docker image inspect zdr-test/postgres:current >/dev/null 2>&1 &&
    docker image inspect zdr-test/base:current >/dev/null 2>&1; then
    DK=zdrf-$RANDOM$RANDOM
    DKPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    docker_cleanup() {
        docker rm -f "$DK" "$DK-app" >/dev/null 2>&1 || true
        for v in $(docker volume ls -q | grep "^$DK" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
    }
    trap 'docker_cleanup; cleanup' EXIT
    docker run -d --name "$DK" -e POSTGRES_PASSWORD=faults-pw -e POSTGRES_DB=app \
        -v "$DK-data:/var/lib/postgresql/data" -p "127.0.0.1:$DKPORT:5432" zdr-test/postgres:current >/dev/null
    docker run -d --name "$DK-app" zdr-test/base:current sh -c "trap 'exit 0' TERM; while :; do sleep 0.2; done" >/dev/null
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$DK") == healthy ]]; do sleep 0.2; done
    docker exec "$DK" psql -X -q -U postgres -d app -c "CREATE TABLE orders (id int PRIMARY KEY, item text);
        INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g;"
    dk_rows() { docker exec "$DK" psql -X -At -U postgres -d app -c "SELECT count(*) || ':' || md5(string_agg(item, ',' ORDER BY id)) FROM orders" 2>/dev/null; }
    DK_WANT=$(dk_rows)
    cat >"$WORK/docker.toml" <<EOF
primary = "local"
[tiers.local]
type = "fs"
root = "$WORK/tiers/docker"
[components.db]
type = "postgres"
host = "127.0.0.1"
port = $DKPORT
user = "postgres"
database = "app"
runner = "docker"
container = "$DK"
dependents = ["$DK-app"]
EOF
    zdk() { ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$WORK/docker.toml" --no-progress "$@"; }
    zdk backup db >/dev/null
    # With `finished`: the killed run had completed the recovery (`completed_recovery`).
    dk_check() {
        local res=ok note=""
        if [[ ${1:-} == finished ]]; then
            note="(the killed run had completed the recovery)"
        elif ! zdk recover container db --no-backup >"$WORK/err" 2>&1; then
            res=FAIL; note="the next recovery failed: $(tail -c 300 "$WORK/err" | tr '\n' ' ')"
        fi
        [[ $(dk_rows) == "$DK_WANT" ]] || { res=FAIL; note="$note; rows differ"; }
        local markers helpers drills
        markers=$(find "$WORK/tiers/docker/reports/unfinished" -type f 2>/dev/null | wc -l)
        helpers=$(docker ps -aq --filter label=io.zdr.helper --filter "volume=$DK-data" | wc -l)
        drills=$(docker ps -aq --filter label=io.zdr.drill --filter "name=$DK-zdr-drill" | wc -l)
        [[ $markers -eq 0 ]] || { res=FAIL; note="$note; $markers recovery marker(s) left"; }
        [[ $helpers -eq 0 ]] || { res=FAIL; note="$note; $helpers copy helper(s) left"; }
        [[ $drills -eq 0 ]] || { res=FAIL; note="$note; $drills drill copies left"; }
        [[ $(docker inspect -f '{{.State.Running}}' "$DK-app") == true ]] || { res=FAIL; note="$note; the app container does not run"; }
        # The volumes kept aside by the runs: forensics copies, removed here to keep the disk.
        for v in $(docker volume ls -q | grep "^$DK-data-failed-" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
        echo "$res|$note"
    }
    for rep in $(seq 1 "$REPS"); do
        for step in remove-failed keep-volumes recreate wait-healthy restore dependents; do
            docker kill "$DK" >/dev/null
            ZDR_FAILPOINT=recover-after-$step zdk recover container db --no-backup >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(dk_check)
            record container "recover killed after $step" "$res" "$note"
        done
        for delay in 0.3 1.2 2.5 4; do
            docker kill "$DK" >/dev/null
            ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$WORK/docker.toml" --no-progress \
                recover container db --no-backup >/dev/null 2>&1 &
            BGPID=$!
            sleep "$delay"
            kill -9 "$BGPID" 2>/dev/null || true
            status=0
            wait "$BGPID" 2>/dev/null || status=$?
            ended=""
            if completed_recovery "$status" "$DK" "$WORK/tiers/docker/reports/unfinished"; then ended=finished; fi
            IFS='|' read -r res note < <(dk_check $ended)
            record container "recover SIGKILL after ${delay}s" "$res" "$note"
        done
        # A drill killed midway leaves its copy; the next drill still passes and the live
        # container was never touched.
        started=$(docker inspect -f '{{.State.StartedAt}}' "$DK")
        ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$WORK/docker.toml" --no-progress \
            drill --scenario container db >/dev/null 2>&1 &
        BGPID=$!
        sleep 2
        kill -9 "$BGPID" 2>/dev/null || true
        wait "$BGPID" 2>/dev/null || true
        res=ok note=""
        zdk drill --scenario container db >/dev/null 2>"$WORK/err" || { res=FAIL; note="the next drill failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(docker inspect -f '{{.State.StartedAt}}' "$DK") == "$started" ]] || { res=FAIL; note="$note; the live container was restarted"; }
        [[ $(dk_rows) == "$DK_WANT" ]] || { res=FAIL; note="$note; live rows differ"; }
        left=$(docker ps -aq --filter label=io.zdr.drill --filter "name=$DK-zdr-drill" | wc -l)
        [[ $left -eq 0 ]] || { res=FAIL; note="$note; $left drill copies left after the next drill"; }
        vols=$(docker volume ls -q | grep -c -- "^$DK-data-zdr-drill-" || true)
        [[ $vols -eq 0 ]] || { res=FAIL; note="$note; $vols drill volume(s) left after the next drill"; }
        record container "drill SIGKILL after 2s, then a drill" "$res" "$note"
    done

    # --- 16. full-system recoveries killed ----------------------------------------------------
    # The same container and a config tree, backed up and replicated to an offsite tier. Each
    # injection is the disaster (container, volume, local tier and config tree gone) and a
    # `zdr recover system --from offsite` killed at a container step's failpoint or at a random
    # instant; the same command run again must succeed and bring everything back: the rows, the
    # files, no unfinished marker (system or container), the app container running.
    mkdir -p "$WORK/sysconf/nginx"
    for i in $(seq 1 40); do echo "server { listen $((8000 + i)); }" >"$WORK/sysconf/nginx/site$i.conf"; done
    echo "MODE=live" >"$WORK/sysconf/app.env"
    SYS_WANT=$(cd "$WORK/sysconf" && find . -type f -exec sha256sum {} + | sort | sha256sum)
    sed -e "s|^root = \"$WORK/tiers/docker\"|root = \"$WORK/tiers/sys-local\"|" "$WORK/docker.toml" >"$WORK/system.toml"
    cat >>"$WORK/system.toml" <<EOF
[tiers.offsite]
type = "fs"
root = "$WORK/tiers/sys-offsite"
[components.configs]
type = "files"
path = "$WORK/sysconf"
EOF
    sed -i '1a replicate_to = ["offsite"]' "$WORK/system.toml"
    zsys() { ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$WORK/system.toml" --no-progress "$@"; }
    zsys backup db --replicate >/dev/null
    zsys backup configs --replicate >/dev/null
    sys_disaster() {
        docker rm -f "$DK" >/dev/null 2>&1 || true
        for v in $(docker volume ls -q | grep "^$DK-data" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
        rm -rf "$WORK/tiers/sys-local" "$WORK/sysconf"
    }
    # With `finished`: the killed run had completed the recovery (`completed_recovery`).
    sys_check() {
        local res=ok note=""
        if [[ ${1:-} == finished ]]; then
            note="(the killed run had completed the recovery)"
        elif ! zsys recover system --from offsite --no-backup >"$WORK/err" 2>&1; then
            res=FAIL; note="the next recovery failed: $(tail -c 300 "$WORK/err" | tr '\n' ' ')"
        fi
        [[ $(dk_rows) == "$DK_WANT" ]] || { res=FAIL; note="$note; rows differ"; }
        local got markers
        got=$(cd "$WORK/sysconf" 2>/dev/null && find . -type f -exec sha256sum {} + | sort | sha256sum)
        [[ $got == "$SYS_WANT" ]] || { res=FAIL; note="$note; config files differ"; }
        markers=$(find "$WORK/tiers/sys-local/reports/unfinished" "$WORK/tiers/sys-local/reports/unfinished-system" -type f 2>/dev/null | wc -l)
        [[ $markers -eq 0 ]] || { res=FAIL; note="$note; $markers recovery marker(s) left"; }
        [[ $(docker inspect -f '{{.State.Running}}' "$DK-app") == true ]] || { res=FAIL; note="$note; the app container does not run"; }
        echo "$res|$note"
    }
    for rep in $(seq 1 "$REPS"); do
        for step in recreate wait-healthy restore dependents; do
            sys_disaster
            ZDR_FAILPOINT=recover-after-$step zsys recover system --from offsite --no-backup >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(sys_check)
            record system "recover system killed after the container's $step" "$res" "$note"
        done
        # Between the system's own steps: the backups fetched; the database recovered (its
        # container healthy again, which a fresh run would refuse to replace).
        for point in fetch db; do
            sys_disaster
            ZDR_FAILPOINT=recover-system-after-$point zsys recover system --from offsite --no-backup >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(sys_check)
            record system "recover system killed after $point" "$res" "$note"
        done
        for delay in 0.2 1 3 6; do
            sys_disaster
            ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$WORK/system.toml" --no-progress \
                recover system --from offsite --no-backup >/dev/null 2>&1 &
            BGPID=$!
            sleep "$delay"
            kill -9 "$BGPID" 2>/dev/null || true
            status=0
            wait "$BGPID" 2>/dev/null || status=$?
            ended=""
            if completed_recovery "$status" "$DK" "$WORK/tiers/sys-local/reports/unfinished" \
                "$WORK/tiers/sys-local/reports/unfinished-system"; then ended=finished; fi
            IFS='|' read -r res note < <(sys_check $ended)
            record system "recover system SIGKILL after ${delay}s" "$res" "$note"
        done
    done
    docker_cleanup
else
    echo "(no Docker engine or test images: the container injections are skipped; scripts/build-test-images.sh builds them)"
fi

# --- 17. redis restores in a container killed ------------------------------------------------
# A Redis container (`--appendonly yes`, /data on a volume) under `runner = "docker"`: each
# `zdr restore` is killed at the failpoints around the swap (the container then down) or at a
# random instant; the next backup of the component must succeed (starting the container again
# where the killed run stopped it), the data must be whole (the old or the backup's, never a
# mix or nothing), and nothing of the restore may be left in the volume.
if command -v docker >/dev/null && docker image inspect zdr-test/redis:current >/dev/null 2>&1; then
    RK=zdrf-redis-$RANDOM$RANDOM
    RKPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis_container_cleanup() {
        docker rm -f "$RK" >/dev/null 2>&1 || true
        docker volume rm "$RK-data" >/dev/null 2>&1 || true
    }
    trap 'redis_container_cleanup; cleanup' EXIT
    docker run -d --name "$RK" -v "$RK-data:/data" -p "127.0.0.1:$RKPORT:6379" zdr-test/redis:current \
        redis-server --appendonly yes >/dev/null
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$RK") == healthy ]]; do sleep 0.2; done
    rk() { redis-cli -p "$RKPORT" "$@"; }
    rk EVAL "for i=1,2000 do redis.call('SET','k'..i,i) end return 1" 0 >/dev/null
    cat >"$WORK/redis-container.toml" <<EOF
primary = "local"
[tiers.local]
type = "fs"
root = "$WORK/tiers/redis-container"
[components.cache]
type = "redis"
host = "127.0.0.1"
port = $RKPORT
runner = "docker"
container = "$RK"
EOF
    zrk() { "$ZDR_BIN" --config "$WORK/redis-container.toml" --no-progress "$@"; }
    RK_BACKUP=$(zrk --json backup cache | python3 -c 'import json,sys; print(json.load(sys.stdin)["backup"]["id"])')
    rk_check() {
        local res=ok note=""
        zrk backup cache >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="the next backup failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(docker inspect -f '{{.State.Running}}' "$RK") == true ]] || { res=FAIL; note="$note; the container is down"; }
        local n k1
        n=$(rk DBSIZE 2>/dev/null); k1=$(rk GET k1 2>/dev/null)
        [[ $n == 2000 && ($k1 == 1 || $k1 == changed) ]] || { res=FAIL; note="$note; data: $n keys, k1=$k1"; }
        local left
        left=$(docker exec "$RK" sh -c 'ls -a /data | grep -e "^\.zdr-restore-" -e "\.zdr-new-" | tr "\n" " "' 2>/dev/null || true)
        [[ -z $left ]] || { res=FAIL; note="$note; left in /data: $left"; }
        echo "$res|$note"
    }
    for rep in $(seq 1 $((2 * REPS))); do
        for point in redis-after-stop redis-after-swap; do
            rk SET k1 changed >/dev/null
            ZDR_FAILPOINT=$point zrk restore cache --backup "$RK_BACKUP" --no-safety-copy >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(rk_check)
            record redis-container "restore killed at $point" "$res" "$note"
        done
        for delay in 0.3 1 2; do
            rk SET k1 changed >/dev/null
            "$ZDR_BIN" --config "$WORK/redis-container.toml" --no-progress \
                restore cache --backup "$RK_BACKUP" --no-safety-copy >/dev/null 2>&1 &
            BGPID=$!
            sleep "$delay"
            kill -9 "$BGPID" 2>/dev/null || true
            wait "$BGPID" 2>/dev/null || true
            # A restore killed before its journal may leave its staged copy: the next restore
            # removes it; the backup after a kill must not be stopped by it either way.
            zrk restore cache --backup "$RK_BACKUP" --no-safety-copy >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(rk_check)
            record redis-container "restore SIGKILL after ${delay}s" "$res" "$note"
        done
    done
    redis_container_cleanup
else
    echo "(no Docker engine or zdr-test/redis image: the redis container injections are skipped)"
fi

# --- 18. physical container recoveries killed ------------------------------------------------
# A PostgreSQL container archiving its WAL through the zdr binary mounted into it, a base
# backup, rows written after it (archived): each injection crashes the container, kills
# `zdr recover container --method physical` at a step's failpoint or at a random instant
# (while the base backup streams in, while the server replays), then runs it again: it must
# succeed with every archived row back, no recovery marker, no host staging directory, no
# recovery settings or staged WAL left in the data directory, and the app container running.
if command -v docker >/dev/null && docker image inspect zdr-test/postgres:current >/dev/null 2>&1 &&
    docker image inspect zdr-test/base:current >/dev/null 2>&1; then
    PK=zdrf-phys-$RANDOM$RANDOM
    PKPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PKDIR=$WORK/physical
    physical_cleanup() {
        docker rm -f "$PK" "$PK-app" >/dev/null 2>&1 || true
        for v in $(docker volume ls -q | grep "^$PK" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
    }
    trap 'physical_cleanup; cleanup' EXIT
    mkdir -p "$PKDIR/tier/.zdr-tmp"
    chmod 755 "$WORK" "$PKDIR"
    cat >"$PKDIR/zdr.toml" <<EOF
primary = "local"
[tiers.local]
type = "fs"
root = "$PKDIR/tier"
[components.db]
type = "postgres"
host = "127.0.0.1"
port = $PKPORT
user = "postgres"
database = "app"
runner = "docker"
container = "$PK"
dependents = ["$PK-app"]
EOF
    chmod 644 "$PKDIR/zdr.toml"
    # The server's user in the image (uid 999) runs archive_command: the tier is its.
    chown -R 999:999 "$PKDIR/tier"
    docker run -d --name "$PK" -e POSTGRES_PASSWORD=faults-pw -e POSTGRES_DB=app \
        -v "$PK-data:/var/lib/postgresql/data" -p "127.0.0.1:$PKPORT:5432" \
        -v "$ZDR_BIN:/usr/local/bin/zdr:ro" -v "$PKDIR/zdr.toml:/etc/zdr/zdr.toml:ro" \
        -v "$PKDIR/tier:$PKDIR/tier" zdr-test/postgres:current postgres -c wal_level=replica \
        -c archive_mode=on \
        -c "archive_command=/usr/local/bin/zdr --config /etc/zdr/zdr.toml --no-progress wal push --component db %p" \
        >/dev/null
    docker run -d --name "$PK-app" zdr-test/base:current sh -c "trap 'exit 0' TERM; while :; do sleep 0.2; done" >/dev/null
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$PK") == healthy ]]; do sleep 0.2; done
    pk_sql() { docker exec "$PK" psql -X -At -U postgres -d app -c "$1" 2>/dev/null; }
    pk_sql "CREATE TABLE orders (id int PRIMARY KEY, item text);
        INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g;" >/dev/null
    zpk() { ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$PKDIR/zdr.toml" --no-progress "$@"; }
    zpk backup db --base >/dev/null
    # Written after the base backup: only the archive holds it.
    pk_sql "INSERT INTO orders SELECT g, 'after ' || g FROM generate_series(20001, 25000) g" >/dev/null
    seg=$(pk_sql "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s")
    until [[ $(pk_sql "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver") == t ]]; do sleep 0.2; done
    pk_rows() { pk_sql "SELECT count(*) || ':' || md5(string_agg(item, ',' ORDER BY id)) FROM orders"; }
    PK_WANT=$(pk_rows)
    # With `finished`: the killed run had completed the recovery (`completed_recovery`).
    pk_check() {
        local res=ok note=""
        if [[ ${1:-} == finished ]]; then
            note="(the killed run had completed the recovery)"
        elif ! zpk recover container db --no-backup --method physical >"$WORK/err" 2>&1; then
            res=FAIL; note="the next recovery failed: $(tail -c 300 "$WORK/err" | tr '\n' ' ')"
        fi
        [[ $(pk_rows) == "$PK_WANT" ]] || { res=FAIL; note="$note; rows differ"; }
        local markers staged inside
        markers=$(find "$PKDIR/tier/reports/unfinished" -type f 2>/dev/null | wc -l)
        staged=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'zdr-pg-recover-*' 2>/dev/null | wc -l)
        inside=$(pk_sql "SELECT count(*) FROM pg_ls_dir('.') d WHERE d IN ('zdr-restore-wal', 'recovery.signal', 'zdr-recovery.conf')")
        [[ $markers -eq 0 ]] || { res=FAIL; note="$note; $markers recovery marker(s) left"; }
        [[ $staged -eq 0 ]] || { res=FAIL; note="$note; $staged host staging dir(s) left"; }
        [[ $inside == 0 ]] || { res=FAIL; note="$note; recovery files left in the data directory"; }
        [[ -z $(pk_sql "SHOW restore_command") ]] || { res=FAIL; note="$note; restore_command still set"; }
        [[ $(docker inspect -f '{{.State.Running}}' "$PK-app") == true ]] || { res=FAIL; note="$note; the app container does not run"; }
        for v in $(docker volume ls -q | grep "^$PK-data-failed-" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
        echo "$res|$note"
    }
    for rep in $(seq 1 "$REPS"); do
        for step in recreate restore wait-healthy; do
            docker kill "$PK" >/dev/null
            ZDR_FAILPOINT=recover-after-$step zpk recover container db --no-backup --method physical >/dev/null 2>&1 || true
            IFS='|' read -r res note < <(pk_check)
            record physical "recover killed after $step" "$res" "$note"
        done
        for delay in 0.5 1.5 3 5; do
            docker kill "$PK" >/dev/null
            ZDR_COMPONENTS__DB__PASSWORD=faults-pw "$ZDR_BIN" --config "$PKDIR/zdr.toml" --no-progress \
                recover container db --no-backup --method physical >/dev/null 2>&1 &
            BGPID=$!
            sleep "$delay"
            kill -9 "$BGPID" 2>/dev/null || true
            status=0
            wait "$BGPID" 2>/dev/null || status=$?
            ended=""
            if completed_recovery "$status" "$PK" "$PKDIR/tier/reports/unfinished"; then ended=finished; fi
            IFS='|' read -r res note < <(pk_check $ended)
            record physical "recover SIGKILL after ${delay}s" "$res" "$note"
        done
    done
    physical_cleanup
else
    echo "(no Docker engine or zdr-test images: the physical container recovery injections are skipped)"
fi

# --- 19. object-storage backups and restores killed, their server killed ---------------------
# An s3-bucket component (bucket `objects` of the SeaweedFS of section 14: 300 objects of up
# to 200 KB) backed up to the local tier. Each injection: a backup killed (SIGKILL) at a
# random instant, then every listed backup verifies and the next backup succeeds storing only
# what no stored blob holds yet; a restore into another bucket killed at a random instant,
# then the same restore completes (verified against the backup) and the live bucket is
# unchanged; the S3 server killed during a backup, then the backup failed (non-zero), nothing
# incomplete is listed, and with the server back the next backup succeeds.
if [[ -n $WEED ]] && start_weed; then
    S3EP=http://127.0.0.1:${WP[3]}
    s3curl() { curl -s -f --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3KEY:$S3SECRET" "$@"; }
    s3curl -X PUT "$S3EP/objects" >/dev/null
    mkdir -p "$WORK/objects"
    for i in $(seq 1 300); do
        head -c $((RANDOM * 6 + 1)) /dev/urandom >"$WORK/objects/o$i"
        s3curl -T "$WORK/objects/o$i" "$S3EP/objects/dir-$((i % 7))/object-$i.bin" >/dev/null
    done
    # Keys, sizes and ETags of a bucket, in listing order: what a restore must leave alone.
    bucket_state() {
        local b=$1 token="" page
        while :; do
            page=$(s3curl "$S3EP/$b?list-type=2&max-keys=1000${token:+&continuation-token=$token}") ||
                { echo "no bucket $b"; break; }
            printf '%s' "$page" | python3 -c '
import html, re, sys
for k, e, n in re.findall(r"<Contents>.*?<Key>([^<]*)</Key>.*?<ETag>([^<]*)</ETag>.*?<Size>([0-9]*)</Size>.*?</Contents>", sys.stdin.read(), re.S):
    print(html.unescape(k), html.unescape(e), n)'
            token=$(printf '%s' "$page" | python3 -c '
import re, sys, urllib.parse
m = re.search(r"<NextContinuationToken>([^<]*)<", sys.stdin.read())
print(urllib.parse.quote(m.group(1), safe="") if m else "")')
            [[ -n $token ]] || break
        done | sha256sum | cut -c1-16
    }
    cat >>"$WORK/zdr.toml" <<EOF
[components.objects]
type = "s3-bucket"
endpoint = "$S3EP"
region = "us-east-1"
buckets = ["objects"]
access_key_id = "$S3KEY"
EOF
    export ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY=$S3SECRET
    zdr backup objects >/dev/null
    live=$(bucket_state objects)
    for rep in $(seq 1 $((4 * REPS))); do
        # New content each time, so the killed backup has something to store.
        for i in $(seq 1 20); do
            head -c $((RANDOM * 6 + 1)) /dev/urandom >"$WORK/objects/n"
            s3curl -T "$WORK/objects/n" "$S3EP/objects/new-$rep/o$i.bin" >/dev/null
        done
        live=$(bucket_state objects)
        zdr_killed 0.05 1.0 backup objects
        IFS='|' read -r res note <<<"$(after_kill_checks objects)"
        stored=$(zdr --json backup objects 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["backup"]["facts"]["stored_blobs"])' || echo "?")
        [[ $stored == 0 ]] || { res=FAIL; note="$note; a backup after the re-run stored $stored blob(s) again"; }
        [[ $(bucket_state objects) == "$live" ]] || { res=FAIL; note="$note; the live bucket changed"; }
        left=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'zdr-s3-*' | wc -l)
        [[ $left -eq 0 ]] || { res=FAIL; note="$note; $left temporary file(s) of the killed run left"; }
        record objects "backup SIGKILL after ${delay}s" "$res" "$note"

        zdr_killed 0.05 1.0 restore objects --to-bucket "copy-$rep"
        res=ok note=""
        zdr restore objects --to-bucket "copy-$rep" >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="the same restore failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(bucket_state objects) == "$live" ]] || { res=FAIL; note="$note; the live bucket changed"; }
        [[ $(bucket_state "copy-$rep") == "$live" ]] || { res=FAIL; note="$note; the copy differs from the live bucket"; }
        left=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'zdr-s3-*' | wc -l)
        [[ $left -eq 0 ]] || { res=FAIL; note="$note; $left temporary file(s) of the killed run left"; }
        record objects "restore into a bucket SIGKILL after ${delay}s" "$res" "$note"
    done
    # 100 MB of new objects per injection; the server dies at a random fraction of the time a
    # backup of as much new content takes here.
    new_objects() {
        local i
        for i in $(seq 1 100); do
            head -c 1000000 /dev/urandom >"$WORK/objects/n"
            s3curl -T "$WORK/objects/n" "$S3EP/objects/$1/o$i.bin" >/dev/null
        done
    }
    new_objects late-0
    t0=$(date +%s.%N)
    zdr backup objects >/dev/null
    took=$(python3 -c "print($(date +%s.%N) - $t0)")
    for rep in $(seq 1 $((2 * REPS))); do
        new_objects "late-$rep"
        before=$(listed)
        delay=$(python3 -c "import random; print(round(random.uniform(0.05, 0.25) * $took, 3))")
        zdr_bg backup objects
        pid=$BGPID
        sleep "$delay"
        stop_weed
        res=ok note=""
        if wait "$pid" 2>/dev/null; then
            note="(finished before the server died)"
        fi
        start_weed || { res=FAIL; note="$note; SeaweedFS did not come back"; }
        zdr verify --tier local --component objects >/dev/null 2>&1 || { res=FAIL; note="$note; a listed backup does not verify"; }
        zdr backup objects >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="$note; the next backup failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        (( $(listed) > before )) || { res=FAIL; note="$note; no backup listed after the re-run"; }
        record objects "S3 server SIGKILL after ${delay}s of a backup" "$res" "$note"
    done
    unset ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY
    stop_weed
fi

# --- 20. n8n restores and backups killed, the instance killed mid-restore -------------------
# An n8n component on the n8n API **double** (a process, `zdr-n8n-double`; no n8n server can
# be installed here): 200 workflows, every third active, tagged. Each injection: a restore
# into a new, empty instance killed (SIGKILL) at a random instant, then the same restore
# completes and the new instance holds each workflow exactly once (none duplicated by the
# re-run), with the same names, active flags and tags as the source; a backup killed
# at a random instant, then every listed backup verifies and the next one succeeds; the new
# instance killed during a restore, then the restore failed naming it and, into an instance
# started again (empty, like one whose database was lost), completes.
N8N_KEY=faults-n8n-key-$RANDOM$RANDOM
# start_n8n NAME SEED: a double in the background; its URL in N8N_URL.
start_n8n() {
    N8N_DOUBLE_API_KEY=$N8N_KEY "$N8N_DOUBLE_BIN" "$2" >"$WORK/n8n-$1.url" 2>"$WORK/n8n-$1.err" &
    echo $! >"$WORK/n8n-$1.pid"
    disown $!   # its SIGKILL is the injection, not news
    local i
    for i in $(seq 1 200); do
        [[ -s $WORK/n8n-$1.url ]] && break
        sleep 0.05
    done
    N8N_URL=$(head -1 "$WORK/n8n-$1.url")
    [[ -n $N8N_URL ]]
}
stop_n8n() {
    local pid i
    pid=$(cat "$WORK/n8n-$1.pid")
    kill -9 "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    rm -f "$WORK/n8n-$1.pid"
}
# Name, active flag and tags of every workflow of the instance at URL, one line each, sorted:
# a workflow restored twice shows as a repeated line.
n8n_state() {
    curl -s -f -H "X-N8N-API-KEY: $N8N_KEY" "$1/api/v1/workflows?limit=250" | python3 -c '
import json, sys
for w in sorted(json.load(sys.stdin)["data"], key=lambda w: w["name"]):
    print(w["name"], w["active"], ",".join(sorted(t["name"] for t in w.get("tags") or [])))'
}
if start_n8n source 200; then
    SOURCE_URL=$N8N_URL
    printf '[components.n8n]\ntype = "n8n"\nurl = "%s"\n' "$SOURCE_URL" >>"$WORK/zdr.toml"
    export ZDR_COMPONENTS__N8N__API_KEY=$N8N_KEY
    zdr backup n8n >/dev/null
    want=$(n8n_state "$SOURCE_URL" | sha256sum)
    for rep in $(seq 1 $((4 * REPS))); do
        start_n8n "new-$rep" 0
        target=$N8N_URL
        ZDR_COMPONENTS__N8N__URL=$target zdr_killed 0.02 0.3 restore n8n
        partial=$(n8n_state "$target" | wc -l)
        res=ok note="$partial of 200 workflows in place after the kill"
        ZDR_COMPONENTS__N8N__URL=$target zdr restore n8n >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="$note; the same restore failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(n8n_state "$target" | sha256sum) == "$want" ]] ||
            { res=FAIL; note="$note; the new instance differs (repeated: $(n8n_state "$target" | cut -d' ' -f1-2 | uniq -d | head -3 | tr '\n' ' '))"; }
        record n8n "restore into a new instance SIGKILL after ${delay}s" "$res" "$note"
        stop_n8n "new-$rep"

        zdr_killed 0.01 0.3 backup n8n
        IFS='|' read -r res note <<<"$(after_kill_checks n8n)"
        record n8n "backup SIGKILL after ${delay}s" "$res" "$note"
    done
    for rep in $(seq 1 $((2 * REPS))); do
        start_n8n dying 0
        target=$N8N_URL
        delay=$(python3 -c "import random; print(round(random.uniform(0.02, 0.4), 3))")
        ZDR_COMPONENTS__N8N__URL=$target "$ZDR_BIN" --config "$WORK/zdr.toml" --no-progress \
            restore n8n >/dev/null 2>"$WORK/err" &
        pid=$!
        sleep "$delay"
        stop_n8n dying
        res=ok note=""
        if wait "$pid"; then
            note="(finished before the instance died)"
        elif ! grep -q "${target#http://}" "$WORK/err"; then
            res=FAIL note="the error does not name the instance: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"
        fi
        start_n8n again 0
        again=$N8N_URL
        ZDR_COMPONENTS__N8N__URL=$again zdr restore n8n >/dev/null 2>"$WORK/err" ||
            { res=FAIL; note="$note; the restore into the instance started again failed: $(tail -c 200 "$WORK/err" | tr '\n' ' ')"; }
        [[ $(n8n_state "$again" | sha256sum) == "$want" ]] || { res=FAIL; note="$note; that instance differs"; }
        record n8n "instance SIGKILL after ${delay}s of a restore" "$res" "$note"
        stop_n8n again
    done
    res=ok note=""
    [[ $(n8n_state "$SOURCE_URL" | sha256sum) == "$want" ]] || { res=FAIL; note="it changed"; }
    record n8n "the source instance untouched by it all" "$res" "$note"
    unset ZDR_COMPONENTS__N8N__API_KEY
    stop_n8n source
else
    record n8n "the n8n double starts" FAIL "$(tail -c 200 "$WORK/n8n-source.err")"
fi

# --- leftovers -------------------------------------------------------------------------------
left=$(find "$WORK/tiers/local/.zdr-tmp" -type f 2>/dev/null | wc -l)
ZDR_PIPELINE__SWEEP_GRACE_SECS=0 zdr backup configs >/dev/null 2>&1 || true
after=$(find "$WORK/tiers/local/.zdr-tmp" -type f 2>/dev/null | wc -l)
res=ok note="$left temporary file(s) left by killed runs"
[[ $after -eq 0 ]] || { res=FAIL; note="$note; $after still there after the next run"; }
record cleanup "temporary files swept by the next backup" "$res" "$note"

echo
echo "| category | injections | passed | failed |"
echo "| --- | --- | --- | --- |"
awk -F'\t' '{n[$1]++; if ($3=="ok") p[$1]++; else f[$1]++} END {for (c in n) printf "| %s | %d | %d | %d |\n", c, n[c], p[c]+0, f[c]+0}' "$RESULTS" | sort
echo "| **all** | $N | $((N - FAILED)) | $FAILED |"
[[ $FAILED -eq 0 ]]
