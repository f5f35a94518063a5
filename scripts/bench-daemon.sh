#!/usr/bin/env bash
# Unattended-operation benchmark (not a test), the measures of the scheduling work:
#  1. `zdr prune` of BACKUPS (default 10,000) backups of one component on the S3 tier
#     (SeaweedFS), hourly over 14 months, with keep_daily = 7, keep_weekly = 4,
#     keep_monthly = 12: wall time and peak memory of the prune that deletes almost all of
#     them, then of the next prune (nothing to delete); and the S3 requests a prune makes,
#     counted by a small HTTP proxy in front of SeaweedFS on the newest COUNTED (default
#     1,000) of those backups in another bucket (the proxy, one Python process, is too slow
#     for 10,000; the timed runs go direct).
#  2. `zdr daemon` idle: resident memory and CPU time over IDLE seconds (default 120) between
#     jobs, with the runbook's default jobs for the same config.
#
#   scripts/bench-daemon.sh                              # builds the release zdr
#   ZDR_BIN=target/release/zdr scripts/bench-daemon.sh   # no build: use this binary
#   ZDR_BIN=target/dist/zdr BACKUPS=200 COUNTED=100 scripts/bench-daemon.sh
#                                   # the shipped profile (cargo build --profile dist); a
#                                   # small history when only the idle daemon is of interest
#
# Everything lives under $W (default $TMPDIR/zdr-daemonbench) and is removed at the end except
# $W/results.md (also printed, with the load average beside each figure).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-${TMPDIR:-/tmp}/zdr-daemonbench}
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN
BACKUPS=${BACKUPS:-10000}
COUNTED=${COUNTED:-1000}
IDLE=${IDLE:-120}
for t in weed aws python3; do
    command -v "$t" >/dev/null || { echo "bench-daemon.sh: $t is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
done
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
rm -rf "$W"; mkdir -p "$W"
if [ -n "$ZDR_BIN_ARG" ]; then
    ZDR=$(realpath "$ZDR_BIN_ARG")
else
    cargo build --release -q --locked -p zdr-cli
    ZDR=$(realpath "${CARGO_TARGET_DIR:-target}/release/zdr")
fi
# shellcheck source=lib-seaweed.sh
. scripts/lib-seaweed.sh
PROXY_PID= DAEMON_PID=
finish() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null || true
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
    seaweed_stop
    if [ -f "$W/results.md" ]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md -exec rm -rf {} +
    else
        rm -rf "$W"
    fi
}
trap finish EXIT
seaweed_start
load() { cut -d' ' -f1 /proc/loadavg; }

# One real backup on a local tier: the template of the history.
mkdir -p "$W/live" "$W/seed"
echo "A=1" >"$W/live/app.env"
cat >"$W/seed.toml" <<EOF
primary = "local"
[tiers.local]
type = "fs"
root = "$W/seed"
[components.configs]
type = "files"
path = "$W/live"
EOF
"$ZDR" --config "$W/seed.toml" --no-progress backup configs >/dev/null
# BACKUPS copies of it, one per hour back from now, each with its own id, keys and sidecars.
python3 - "$W/seed" "$W/history" "$BACKUPS" <<'EOF'
import datetime, glob, hashlib, json, os, shutil, sys
seed, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m0 = json.load(open(glob.glob(f"{seed}/manifests/configs/*.json")[0]))
art = m0["artifacts"][0]
data = open(os.path.join(seed, art["key"]), "rb").read()
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
os.makedirs(f"{out}/manifests/configs", exist_ok=True)
os.makedirs(f"{out}/configs/daily", exist_ok=True)
for i in range(n):
    t = now - datetime.timedelta(hours=i)
    bid = t.strftime("%Y%m%d_%H%M%S") + "_%04x" % (i % 65536)
    name = f"configs_{bid}.tar.zst"
    key = f"configs/daily/{name}"
    open(f"{out}/{key}", "wb").write(data)
    open(f"{out}/{key}.sha256", "w").write(f"{art['sha256']}  {name}\n")
    m = dict(m0, id=bid, started_at=t.isoformat().replace("+00:00", "Z"),
             finished_at=(t + datetime.timedelta(seconds=1)).isoformat().replace("+00:00", "Z"))
    m["artifacts"] = [dict(art, key=key)]
    body = json.dumps(m, indent=2).encode()
    open(f"{out}/manifests/configs/{bid}.json", "wb").write(body)
    open(f"{out}/manifests/configs/{bid}.json.sha256", "w").write(
        f"{hashlib.sha256(body).hexdigest()}  {bid}.json\n")
EOF
# Uploaded into two buckets by boto3 on 32 threads (aws s3 sync takes minutes per bucket).
objects=$(python3 - "$EP" "$W/history" "$COUNTED" <<'EOF'
import os, sys, boto3
from concurrent.futures import ThreadPoolExecutor
from botocore.config import Config
ep, root, counted = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=ep, config=Config(max_pool_connections=64))
files = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
# The newest COUNTED backups (ids sort by time) for the counted bucket.
ids = sorted({os.path.basename(f).split(".")[0] for f in files if f.startswith("manifests/")})
newest = set(ids[-counted:])
def backup_of(f):
    name = os.path.basename(f).split(".")[0]
    return name[len("configs_"):] if name.startswith("configs_") else name
for b, chosen in (("timed", files), ("counted", [f for f in files if backup_of(f) in newest])):
    s3.create_bucket(Bucket=b)
    def put(key, b=b):
        with open(os.path.join(root, key), "rb") as f:
            s3.put_object(Bucket=b, Key=key, Body=f.read())
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, chosen))
print(len(files))
EOF
)

# The counting proxy: forwards every request unchanged (the Host header too: signatures
# stay valid) and counts them by kind.
PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$PROXY_PORT" "$EP" "$W/requests.json" <<'EOF' &
import http.client, http.server, json, sys, threading, urllib.parse
port, upstream, out = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3]
counts, lock = {}, threading.Lock()
local = threading.local()
def upstream_conn():
    # One kept-alive connection to the server per handler thread.
    if getattr(local, "c", None) is None:
        local.c = http.client.HTTPConnection(upstream.hostname, upstream.port)
    return local.c
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def relay(self):
        q = urllib.parse.urlparse(self.path).query
        kind = self.command
        if self.command == "GET" and ("list-type" in q or "prefix=" in q or q.startswith("delimiter")):
            kind = "LIST"
        elif self.command == "POST" and "delete" in q:
            kind = "DELETE (batch)"
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            with open(out, "w") as f:
                json.dump(counts, f)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        for attempt in (0, 1):
            c = upstream_conn()
            try:
                c.request(self.command, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                local.c = None
                if attempt:
                    raise
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        # A HEAD answer carries the object's length, not its (empty) body's.
        length = r.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
PROXY_PID=$!

config() { # bucket endpoint
    cat <<EOF
primary = "s3"
[tiers.s3]
type = "s3"
bucket = "$1"
endpoint = "$2"
region = "us-east-1"
[components.configs]
type = "files"
path = "$W/live"
[retention]
keep_daily = 7
keep_weekly = 4
keep_monthly = 12
[daemon]
state_file = "$W/daemon.json"
listen = "127.0.0.1:0"
EOF
}
export ZDR_TIERS__S3__ACCESS_KEY_ID=$KEY ZDR_TIERS__S3__SECRET_ACCESS_KEY=$SECRET
config timed "$EP" >"$W/timed.toml"
config counted "http://127.0.0.1:$PROXY_PORT" >"$W/counted.toml"
sed -i 's/^listen = .*//' "$W/counted.toml"
for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PROXY_PORT))" 2>/dev/null && break
    sleep 0.1
done

prune() { # config label
    local l t rss code=0
    l=$(load)
    /usr/bin/time -f "%e %M" -o "$W/time" "$ZDR" --config "$1" --no-progress --json prune >"$W/prune.json" 2>"$W/prune.err" || code=$?
    # time(1) puts "Command exited with non-zero status N" first when the command failed.
    read -r t rss < <(tail -1 "$W/time")
    if [ "$code" != 0 ]; then
        echo "bench-daemon.sh: $2: zdr prune exited with $code:" >&2
        tail -5 "$W/prune.err" >&2
    fi
    python3 - "$W/prune.json" "$2 (exit $code)" "$t" "$((rss / 1024))" "$l" <<'EOF' >>"$W/rows.md"
import json, sys
r = json.load(open(sys.argv[1]))
r = r.get("prune", r)
kept = deleted = 0
for t in r.get("tiers", []):
    for b in t.get("backups", []):
        if b.get("action") == "keep":
            kept += 1
        elif b.get("action") == "deleted":
            deleted += 1
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {deleted} | {kept} | {sys.argv[5]} |")
EOF
}
{
    echo "| run | wall s | peak RSS MiB | deleted | kept | load before |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
} >"$W/rows.md"
prune "$W/timed.toml" "prune of $BACKUPS backups ($objects objects), direct"
prune "$W/timed.toml" "next prune (nothing to delete), direct"
rm -f "$W/requests.json"
prune "$W/counted.toml" "prune of the newest $COUNTED backups, through the counting proxy"
cp "$W/requests.json" "$W/requests-first.json"
rm -f "$W/requests.json"
prune "$W/counted.toml" "next prune, through the counting proxy"
cp "$W/requests.json" "$W/requests-next.json"

# The daemon, idle: RSS and CPU over IDLE seconds after its start-up (status check done).
"$ZDR" --config "$W/timed.toml" daemon >"$W/daemon.out" 2>"$W/daemon.err" &
DAEMON_PID=$!
for _ in $(seq 1 100); do grep -q "serving /metrics" "$W/daemon.err" && break; sleep 0.1; done
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat"; }
hz=$(getconf CLK_TCK)
l=$(load)
c0=$(ticks)
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON_PID/status")
sleep "$IDLE"
c1=$(ticks)
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON_PID/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
# The split: memory zdr allocates (heap, stacks) and pages of the executable mapped from the
# page cache (shared, dropped first under memory pressure).
anon=$(awk '/^Anonymous:/ {print $2}' "/proc/$DAEMON_PID/smaps_rollup")
file=$((rss1 - anon))
exe=$(du -k "$ZDR" | cut -f1)
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || true
DAEMON_PID=

{
    echo "## zdr prune on the S3 tier ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
    echo
    cat "$W/rows.md"
    echo
    echo "S3 requests of the prune of $COUNTED backups: $(cat "$W/requests-first.json")"
    echo
    # The proxy counts from its start: the next prune's requests are the difference.
    echo "S3 requests of the next prune: $(python3 -c 'import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
print(json.dumps({k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}))' "$W/requests-first.json" "$W/requests-next.json")"
    echo
    echo "## zdr daemon idle ($(grep -c . <("$ZDR" --config "$W/timed.toml" --no-progress jobs) ) lines of zdr jobs, load $l)"
    echo
    echo "| measure | value |"
    echo "| --- | ---: |"
    echo "| RSS after start-up, KiB | $rss0 |"
    echo "| RSS after ${IDLE} s idle, KiB | $rss1 |"
    echo "| peak RSS (VmHWM), KiB | $hwm |"
    echo "| of it anonymous (heap, stacks), KiB | $anon |"
    echo "| of it file-backed (the executable's pages), KiB | $file |"
    echo "| executable size, KiB | $exe |"
    echo "| CPU time over ${IDLE} s idle, s | $(echo "scale=3; ($c1 - $c0) / $hz" | bc) |"
} >"$W/results.md"
cat "$W/results.md"
