#!/usr/bin/env bash
# Redis benchmark (not a test): `zdr backup redis` against the runbook's equivalent
# (`redis-cli --rdb` + gzip) on about 2 GB of realistic data, the logical export/restore rate,
# and zdr's peak memory. KEYS and VALUE set the data size.
#
#   scripts/bench-redis.sh                        # builds the release zdr (cargo build --release)
#   ZDR_BIN=target/release/zdr scripts/bench-redis.sh   # no build: use this binary
#
# Everything lives under $W (default $TMPDIR/zdr-redisbench); the servers are stopped and $W is
# removed at the end except its results: $W/results.md (the table, also printed, with the load
# average before each run).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-${TMPDIR:-/tmp}/zdr-redisbench}
# zdr reads ZDR_* variables as config overrides: keep the binary's path out of its environment.
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN
KEYS=${KEYS:-2000000}
VALUE=${VALUE:-1000}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
rm -rf "$W"; mkdir -p "$W/data" "$W/data2" "$W/tier"
if [ -n "$ZDR_BIN_ARG" ]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P1=$(free_port); P2=$(free_port)
start() { redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --save "" --appendonly no \
    --repl-diskless-sync-delay 0 --daemonize yes --pidfile "$2/redis.pid" --logfile "$2/redis.log"; }
stop() { redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true; }
finish() {
    stop "$P1"; stop "$P2"
    if [ -f "$W/results.md" ]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md -exec rm -rf {} +
    else
        rm -rf "$W"
    fi
}
trap finish EXIT
start "$P1" "$W/data"; start "$P2" "$W/data2"; sleep 0.5
t0=$(date +%s.%N)
python3 scripts/gen-redis.py "$KEYS" "$VALUE" | redis-cli -p "$P1" --pipe >/dev/null
used=$(redis-cli -p "$P1" info memory | tr -d '\r' | awk -F: '/^used_memory:/{print $2}')
echo "loaded $KEYS keys, used_memory $used bytes in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
cat > "$W/zdr.toml" <<TOML
primary = "local"
[tiers.local]
type = "fs"
root = "$W/tier"
[components.redis]
type = "redis"
url = "redis://127.0.0.1:$P1"
TOML
export ZDR_CONFIG=$W/zdr.toml
row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$LOAD" | tee -a "$W/results.md"; }
timed() { # label, command...: prints "seconds peak_kib"; the load average before it in $W/load
    local label=$1; shift
    sync; cut -d' ' -f1-3 /proc/loadavg >"$W/load"; local s e; s=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$W/rss" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
    e=$(date +%s.%N)
    echo "$(echo "$e - $s" | bc) $(cat "$W/rss")"
}
printf '| run | seconds | peak RSS MiB | note | load average before (1, 5, 15 min) |\n|---|---:|---:|---|---|\n' | tee "$W/results.md"
read -r a_rdb a_rss < <(timed rdb redis-cli -p "$P1" --rdb "$W/dump.rdb")
LOAD=$(cat "$W/load")
read -r a_gz _ < <(timed gzip sh -c "gzip -6 -c '$W/dump.rdb' > '$W/dump.rdb.gz'")
rdb_size=$(stat -c %s "$W/dump.rdb"); gz_size=$(stat -c %s "$W/dump.rdb.gz")
anchor=$(echo "$a_rdb + $a_gz" | bc)
row "redis-cli --rdb + gzip -6 (runbook)" "$anchor" "$((a_rss / 1024))" "rdb $rdb_size B ($a_rdb s) -> gz $gz_size B ($a_gz s)"
read -r z_zstd z_rss < <(timed zdr "$ZDR" --no-progress backup redis)
LOAD=$(cat "$W/load")
row "zdr backup redis (zstd, checked: CRC64, records, key counts)" "$z_zstd" "$((z_rss / 1024))" "$(echo "scale=2; $z_zstd / $anchor" | bc)x the anchor's time"
read -r z_gzip z_rss2 < <(ZDR_PIPELINE__COMPRESSION=gzip timed zdrgz "$ZDR" --no-progress backup redis)
LOAD=$(cat "$W/load")
row "zdr backup redis (gzip, same format as the anchor)" "$z_gzip" "$((z_rss2 / 1024))" "$(echo "scale=2; $z_gzip / $anchor" | bc)x"
read -r l_exp l_rss < <(timed export "$ZDR" --no-progress backup redis --logical)
LOAD=$(cat "$W/load")
row "zdr backup redis --logical (SCAN+DUMP+PTTL)" "$l_exp" "$((l_rss / 1024))" "$(echo "$KEYS / $l_exp" | bc) keys/s"
read -r l_res r_rss < <(ZDR_COMPONENTS__REDIS__URL="redis://127.0.0.1:$P2" timed restore "$ZDR" --no-progress restore redis --logical)
n2=$(redis-cli -p "$P2" dbsize | tr -d '\r')
LOAD=$(cat "$W/load")
row "zdr restore redis --logical (RESTORE ... ABSTTL REPLACE) into an empty server" "$l_res" "$((r_rss / 1024))" "$(echo "$KEYS / $l_res" | bc) keys/s; $n2 keys restored"
du -sh "$W/tier" >&2
echo "results: $W/results.md" >&2
