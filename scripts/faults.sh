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

WORK=$(mktemp -d /tmp/zdr-faults.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then AS_PG=(runuser -u postgres --); fi

cleanup() {
    umount "$WORK/small" 2>/dev/null || true
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    [[ -f $WORK/redis/redis.pid ]] && kill "$(cat "$WORK/redis/redis.pid")" 2>/dev/null || true
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
        delay=$(python3 -c "import random; print(round(random.uniform(0.02, 0.6), 3))")
        zdr backup "$comp" >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
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
    delay=$(python3 -c "import random; print(round(random.uniform(0.05, 1.5), 3))")
    zdr restore postgres >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
    delay=$(python3 -c "import random; print(round(random.uniform(0.01, 0.4), 3))")
    zdr replicate >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
