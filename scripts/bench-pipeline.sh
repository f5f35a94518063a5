#!/usr/bin/env bash
# Benchmark of the artifact pipeline (zdr-storage/benches/pipeline.rs) against standard tools.
#
#   scripts/bench-pipeline.sh            # the figures of BENCHMARKS.md
#   REPS=1 SIZE=256M BIG=1G scripts/bench-pipeline.sh   # a quick try
#   ZDR_BIN=/path/to/pipeline scripts/bench-pipeline.sh # no cargo build: use this bench executable
#
# The bench executable (zdr-storage/benches/pipeline.rs) is $ZDR_BIN when given (nothing is
# built), else built with `cargo bench -p zdr-storage --bench pipeline --no-run`.
#
# Inputs (under $ZDR_BENCH_DIR, default $TMPDIR/zdr-bench; regenerated when missing or of
# another size):
#   realistic-1g.txt  SIZE bytes shaped like a pg_dump of the reference database
#                     (scripts/bench-reference.sql: docs + pgbench -s 50), written by
#                     the bench's own deterministic generator (`gen-realistic`); ~3.4:1 with zstd -3
#   random-1g.bin     SIZE incompressible bytes: an AES-256-CTR keystream with a fixed key,
#                     i.e. like `head -c 1G /dev/urandom` but the same on every run
#   realistic-4g.txt  BIG bytes of the same realistic data, for the memory check
#
# Every input is read (cat > /dev/null) before each run, so every run reads from the page cache
# (this VM reclaims cold page cache proactively: DAMON). Each measurement is repeated REPS times (default 3): the table shows the fastest
# wall time, the smallest CPU time (user + system, all threads) and the largest peak RSS.
# Anchors are timed around the process (date +%s%N), with `/usr/bin/time -f "%M %U %S"` for
# peak RSS and CPU time; zdr modes report their own time (around `Repository::backup` / the
# read back), their CPU time and their own VmHWM. The fs tier lives in a temporary directory
# under $ZDR_BENCH_DIR, on the same disk, and OpenDAL fsyncs every artifact.
#
# The load average (1, 5, 15 minutes) before each measurement is recorded beside it.
# Results: $ZDR_BENCH_DIR/results.tsv (raw) and $ZDR_BENCH_DIR/results.md (the table, also
# printed), kept; machine.txt beside them. The inputs and the fs tier's files are deleted at
# the end unless KEEP_DATA=1.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${ZDR_BENCH_DIR:-${TMPDIR:-/tmp}/zdr-bench}
# zdr reads ZDR_* variables as config overrides: keep the executable's path out of the way.
ZDR_BIN_ARG=${ZDR_BIN:-}
unset ZDR_BIN
REPS=${REPS:-3}
SIZE=${SIZE:-1G}
BIG=${BIG:-4G}
KEEP_DATA=${KEEP_DATA:-0}
mkdir -p "$DIR"
RESULTS="$DIR/results.tsv"

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time" >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
for t in openssl sha256sum lz4 zstd gzip python3; do
    command -v "$t" >/dev/null || { echo "bench-pipeline.sh: $t is missing" >&2; exit 1; }
done

if [ -n "$ZDR_BIN_ARG" ]; then
    BIN=$(realpath "$ZDR_BIN_ARG")
else
echo "building the bench (cargo bench -p zdr-storage --bench pipeline --no-run)" >&2
BIN=$(cargo bench -p zdr-storage --bench pipeline --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])')
fi
[ -x "$BIN" ] || { echo "bench-pipeline.sh: bench executable not found" >&2; exit 1; }

bytes() { numfmt --from=iec "$1"; }
REAL="$DIR/realistic-1g.txt"
RAND="$DIR/random-1g.bin"
BIGF="$DIR/realistic-4g.txt"
has_size() { [ -f "$1" ] && [ "$(stat -c %s "$1")" -eq "$(bytes "$2")" ]; }
has_size "$REAL" "$SIZE" || "$BIN" gen-realistic "$REAL" --size "$SIZE"
has_size "$BIGF" "$BIG" || "$BIN" gen-realistic "$BIGF" --size "$BIG"
if ! has_size "$RAND" "$SIZE"; then
    head -c "$(bytes "$SIZE")" \
        < <(openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass pass:zdr-bench -in /dev/zero 2>/dev/null) \
        > "$RAND"
fi

now_ns() { date +%s%N; }

# Other work on the machine skews every figure: before each run, wait (up to WAIT_IDLE
# seconds, default 120) for a second in which the CPUs are at least 90 % idle.
busy_pct() {
    local a b
    a=$(head -1 /proc/stat)
    sleep 1
    b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x); split(b, y); t = 0
        for (i = 2; i <= 11; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%d", (t > 0) ? 100 * (t - idle) / t : 0 }'
}
wait_idle() {
    local waited=0
    while [ "$(busy_pct)" -gt 10 ] && [ "$waited" -lt "${WAIT_IDLE:-120}" ]; do
        waited=$((waited + 1))
    done
    [ "$waited" -gt 0 ] && echo "  (waited ${waited}s for idle CPUs)" >&2
    return 0
}

# record FILE LABEL STORED SECONDS CPU RSS: append one row to the results, with the load
# average taken before the measurement's first run.
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(basename "$1")" "$2" "$(stat -c %s "$1")" "$3" "$4" \
        "$5" "$6" "$LOAD" >>"$RESULTS"
    echo "  $2: ${4}s wall, ${5}s CPU, peak RSS ${6} KiB" >&2
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }

# anchor LABEL FILE CMD...: time CMD (stdout to /dev/null) REPS times.
anchor() {
    local label=$1 file=$2
    shift 2
    local best="" cpu="" rss=0 stored="-" t0 t1 m
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    for _ in $(seq "$REPS"); do
        cat "$file" >/dev/null
        wait_idle
        t0=$(now_ns)
        /usr/bin/time -f "%M %U %S" -o "$DIR/.rss" "$@" >/dev/null
        t1=$(now_ns)
        best=$(min "$best" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')")
        read -r m u s < <(tail -1 "$DIR/.rss")
        cpu=$(min "$cpu" "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')")
        [ "$m" -gt "$rss" ] && rss=$m
    done
    case "$label" in
        "lz4 -c (level 1)" | "zstd -3 -T1 -c" | "gzip -6 -c") stored=$("$@" | wc -c) ;;
    esac
    record "$file" "$label" "$stored" "$best" "$cpu" "$rss"
}

# zdr LABEL FILE MODE [ARGS...]: run a bench mode REPS times.
zdr() {
    local label=$1 file=$2 mode=$3
    shift 3
    local best="" cpu="" rss=0 stored="" line m
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    for _ in $(seq "$REPS"); do
        cat "$file" >/dev/null
        wait_idle
        line=$("$BIN" "$mode" "$file" --tier-dir "$DIR" "$@" | grep '^RESULT ')
        best=$(min "$best" "$(sed -E 's/.* seconds=([0-9.]+).*/\1/' <<<"$line")")
        cpu=$(min "$cpu" "$(sed -E 's/.* cpu_seconds=([0-9.]+).*/\1/' <<<"$line")")
        m=$(sed -E 's/.* peak_rss_kib=([0-9]+).*/\1/' <<<"$line")
        stored=$(sed -E 's/.* stored_bytes=([0-9]+).*/\1/' <<<"$line")
        [ "$m" -gt "$rss" ] && rss=$m
    done
    record "$file" "$label" "$stored" "$best" "$cpu" "$rss"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc)," \
        "flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'sha_ni|avx2|avx512f' | tr '\n' ' ')"
    echo "ram: $(free -g | awk '/^Mem:/ { print $2 }') GiB; kernel $(uname -r)"
    echo "tools: $(openssl version | cut -d' ' -f1-2), $(sha256sum --version | head -1)," \
        "$(lz4 --version 2>&1 | grep -o 'v[0-9.]*' | head -1 | sed 's/^/lz4 /'), $(zstd --version | grep -o 'v[0-9.]*' | sed 's/^/zstd /')," \
        "$(gzip --version | head -1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$DIR/machine.txt" >&2

printf 'file\tlabel\tinput_bytes\tstored_bytes\tseconds\tcpu_seconds\tpeak_rss_kib\tload_before\n' >"$RESULTS"
for f in "$REAL" "$RAND"; do
    echo "== $(basename "$f")" >&2
    cat "$f" >/dev/null
    anchor "openssl dgst -sha256" "$f" openssl dgst -sha256 "$f"
    anchor "sha256sum" "$f" sha256sum "$f"
    anchor "lz4 -c (level 1)" "$f" lz4 -c "$f"
    anchor "zstd -3 -T1 -c" "$f" zstd -3 -T1 -c "$f"
    anchor "gzip -6 -c" "$f" gzip -6 -c "$f"
    anchor "lz4 -c | openssl dgst -sha256" "$f" bash -c 'lz4 -c "$1" | openssl dgst -sha256' _ "$f"
    anchor "dd bs=1M conv=fsync (copy to disk)" "$f" \
        bash -c 'dd if="$1" of="$2" bs=1M conv=fsync status=none && rm "$2"' _ "$f" "$DIR/dd-copy"
    zdr "zdr store-none" "$f" store-none
    zdr "zdr hash-lz4" "$f" hash-lz4
    zdr "zdr hash-zstd" "$f" hash-zstd
    zdr "zdr hash-zstd-age" "$f" hash-zstd-age
    zdr "zdr hash-gzip" "$f" hash-gzip
    zdr "zdr restore-lz4" "$f" restore-lz4
    zdr "zdr restore-zstd" "$f" restore-zstd
    zdr "zdr store-none, null tier" "$f" store-none --tier null
    zdr "zdr hash-lz4, null tier" "$f" hash-lz4 --tier null
done
echo "== $(basename "$BIGF") (memory check)" >&2
cat "$BIGF" >/dev/null
zdr "zdr hash-zstd" "$BIGF" hash-zstd
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/machine.txt" >&2

python3 - "$RESULTS" <<'EOF' | tee "$DIR/results.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
files = []
for r in rows:
    if r["file"] not in files:
        files.append(r["file"])
print("| input | run | seconds | MB/s | CPU s | stored bytes (ratio) | peak RSS MiB | throughput vs `openssl dgst -sha256` | load average before |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
base = {}
for r in rows:
    if r["label"] == "openssl dgst -sha256":
        base[r["file"]] = float(r["seconds"])
for r in rows:
    s, n = float(r["seconds"]), int(r["input_bytes"])
    stored = r["stored_bytes"]
    st = "-" if stored in ("-", "") else f"{int(stored):,} ({n / int(stored):.2f}:1)"
    b = base.get(r["file"])
    ratio = f"{b / s:.2f}x" if b else "-"
    label = r["label"].replace("|", "\\|")
    print(f"| {r['file']} | {label} | {s:.3f} | {n / 1e6 / s:,.0f} | {float(r['cpu_seconds']):.2f} | {st} | {int(r['peak_rss_kib']) / 1024:.1f} | {ratio} | {r['load_before']} |")
print()
for f in files:
    b = base.get(f)
    z = [r for r in rows if r["file"] == f and r["label"] == "zdr hash-lz4"]
    if b and z:
        ratio = b / float(z[0]["seconds"])
        print(f"target on {f}: zdr hash-lz4 at {ratio:.2f}x the throughput of openssl dgst -sha256"
              f" (target >= 0.80x): {'met' if ratio >= 0.8 else 'NOT met'}")
mem = [r for r in rows if r["label"] == "zdr hash-zstd"]
if mem:
    print("memory, zdr hash-zstd: " + ", ".join(
        f"{r['file']} {int(r['peak_rss_kib']) / 1024:.1f} MiB" for r in mem))
EOF

if [ "$KEEP_DATA" != 1 ]; then
    rm -f "$REAL" "$RAND" "$BIGF" "$DIR/.rss" "$DIR/dd-copy"
fi
