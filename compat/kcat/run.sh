#!/usr/bin/env bash
# kcat (Debian 1.7.1, librdkafka 2.0.2) compatibility scenarios against a fresh
# single-node gregor.  See README.md for what is covered and FINDINGS.md for
# what was found.
#
# Usage:  compat/kcat/run.sh [scenario ...]     (default: all scenarios)
# Env:    GREGOR_BIN   broker binary (default <repo>/target/release/gregor)
#         KEEP_WORK=1  keep the temp dir (data dir, logs, outputs)
#         KCAT_TIMEOUT per-kcat-invocation timeout in seconds (default 30)
#
# Prints PASS/FAIL per scenario and ends with "N passed, M failed"; exits
# non-zero when any scenario failed (or the broker could not be started).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
GREGOR_BIN="${GREGOR_BIN:-$REPO/target/release/gregor}"
KCAT_TIMEOUT="${KCAT_TIMEOUT:-30}"
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

log() { echo "[kcat-compat] $*" >&2; }

# ------------------------------------------------------------- prerequisites

if ! command -v kcat >/dev/null 2>&1; then
    log "kcat not found: installing Debian's kcat"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq kcat >/dev/null
fi
for tool in kcat python3 timeout diff cmp; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing required tool: $tool"; exit 2; }
done
if [ ! -x "$GREGOR_BIN" ]; then
    log "gregor binary not found at $GREGOR_BIN (build with: cargo build --release)"
    exit 2
fi
log "$(kcat -V 2>&1 | grep -m1 Version)"

# ------------------------------------------------------------------- broker

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gregor-kcat.XXXXXX")"
# The broker's pid lives in a file so that a scenario (a subshell) can restart it.
PIDFILE="$WORK/gregor.pid"

broker_pid() { cat "$PIDFILE" 2>/dev/null || true; }

# stop_broker: SIGTERM, wait up to 10 s, then SIGKILL. Returns 1 if it had to be killed.
stop_broker() {
    local pid rc=0
    pid="$(broker_pid)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "broker did not stop within 10s of SIGTERM: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            rc=1
        fi
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    return "$rc"
}

# start_broker PORT: start gregor on PORT with the run's data dir; wait for it.
start_broker() {
    local out="$WORK/gregor.out"
    : >"$out"
    # Auto-created topics get 3 partitions; single-partition scenarios pin -p 0.
    GREGOR_NUM_PARTITIONS=3 "$GREGOR_BIN" dev --brokers 1 --data-dir "$WORK/data" --port "$1" \
        >"$out" 2>>"$WORK/gregor.log" &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 300); do
        if grep -q "bootstrap.servers=" "$out" 2>/dev/null; then return 0; fi
        kill -0 "$(broker_pid)" 2>/dev/null || break
        sleep 0.1
    done
    log "gregor did not start within 30s; its output:"
    cat "$out" >&2 || true
    tail -20 "$WORK/gregor.log" >&2 || true
    return 1
}

cleanup() {
    local rc=$?
    stop_broker || true
    # Background consumers started by scenarios (each in its own job).
    local j
    for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

PORT="$(free_port)"
BOOT="127.0.0.1:$PORT"
start_broker "$PORT" || exit 2
log "gregor up at $BOOT (pid $(broker_pid), work dir $WORK)"

# ------------------------------------------------------------------ helpers

# kcat with a hard time bound and a metadata timeout.
kc() { timeout --kill-after=5 "$KCAT_TIMEOUT" kcat -b "$BOOT" -m 10 "$@"; }

now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

# expect_same NAME EXPECTED_FILE ACTUAL_FILE: exact comparison with a diff.
expect_same() {
    if ! diff -u --label "expected ($1)" --label "actual ($1)" "$2" "$3"; then
        echo "    mismatch in $1"
        return 1
    fi
}

# wait_for_file_match FILE REGEX SECONDS
wait_for_file_match() {
    local i
    for i in $(seq 1 $(( $3 * 10 ))); do
        if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "    timed out after $3s waiting for /$2/ in $(basename "$1"); it holds:"
    sed 's/^/      /' "$1" || true
    return 1
}

# --------------------------------------------------------------- scenarios
# Each scenario runs in a subshell with errexit: the first failing command
# (including a failed comparison) fails the scenario.  $S is its scratch dir.

scenario_metadata() {
    # Auto-create "meta" (3 partitions) with one record on partition 0.
    echo "m0" | kc -P -t meta -p 0
    kc -L >"$S/all.raw"
    kc -L -t meta >"$S/one.raw"
    # The answering broker is the bootstrap connection or broker 1, depending on
    # librdkafka's timing: accept both forms, then normalise that and the port.
    local b
    for b in all one; do
        head -1 "$S/$b.raw" | grep -qE \
            "^Metadata for .* \(from broker (1: 127\.0\.0\.1:$PORT/1|-1: 127\.0\.0\.1:$PORT/bootstrap)\):\$" \
            || { echo "    unexpected first line: $(head -1 "$S/$b.raw")"; return 1; }
        sed -E -e '1s/\(from broker .*\):$/(from broker <B>):/' -e "s/:$PORT\b/:<PORT>/g" \
            "$S/$b.raw" >"$S/$b.out"
    done
    cat >"$S/all.exp" <<'EOF'
Metadata for all topics (from broker <B>):
 1 brokers:
  broker 1 at 127.0.0.1:<PORT> (controller)
 1 topics:
  topic "meta" with 3 partitions:
    partition 0, leader 1, replicas: 1, isrs: 1
    partition 1, leader 1, replicas: 1, isrs: 1
    partition 2, leader 1, replicas: 1, isrs: 1
EOF
    sed '1s/all topics/meta/' "$S/all.exp" >"$S/one.exp"
    expect_same "kcat -L" "$S/all.exp" "$S/all.out"
    expect_same "kcat -L -t meta" "$S/one.exp" "$S/one.out"
}

scenario_produce_keys_headers() {
    # Keys split at the first ':'; a line without ':' has no key.
    cat >"$S/in1.txt" <<'EOF'
k1:v1
k2:hello world
k3:a:b:c
no-key-line
k5:
:empty-key
k7:ünïcödé ✓
EOF
    kc -P -t kv -p 0 -K: -H h1=v1 -H h2=two -H dup=a -H dup=b -H nullhdr -H empty= -l "$S/in1.txt"
    # No keys, no headers.
    printf 'plain1\nplain2\n' | kc -P -t kv -p 0
    # -Z: empty key / empty value are sent as NULL.
    printf 'kn:\n:vn\n' | kc -P -t kv -p 0 -K: -Z
    kc -C -t kv -p 0 -o beginning -e -Z -f '%K:%k|%S:%s|%h|%p|%o\n' >"$S/out.txt"
    local H='h1=v1,h2=two,dup=a,dup=b,nullhdr=NULL,empty='
    local u='ünïcödé ✓'
    cat >"$S/exp.txt" <<EOF
2:k1|2:v1|$H|0|0
2:k2|11:hello world|$H|0|1
2:k3|5:a:b:c|$H|0|2
-1:NULL|11:no-key-line|$H|0|3
2:k5|0:NULL|$H|0|4
0:NULL|9:empty-key|$H|0|5
2:k7|$(printf '%s' "$u" | wc -c):$u|$H|0|6
-1:NULL|6:plain1||0|7
-1:NULL|6:plain2||0|8
2:kn|-1:NULL||0|9
-1:NULL|2:vn||0|10
EOF
    expect_same "consume kv" "$S/exp.txt" "$S/out.txt"
}

scenario_binary_roundtrip() {
    # One 300 KiB message (all 256 byte values, then random bytes), byte-exact.
    python3 -c 'import os, sys
sys.stdout.buffer.write(bytes(range(256)) * 4 + os.urandom(300 * 1024 - 1024))' >"$S/blob.bin"
    kc -P -t blob -p 0 "$S/blob.bin"     # whole file = one message
    kc -C -t blob -p 0 -o beginning -e -f '%s' >"$S/out.bin"
    cmp "$S/blob.bin" "$S/out.bin"
    kc -C -t blob -p 0 -o beginning -e -f '%S|%o\n' >"$S/len.txt"
    printf '%s|0\n' "$((300 * 1024))" >"$S/len.exp"
    expect_same "blob length" "$S/len.exp" "$S/len.txt"
}

compression_case() {
    local codec=$1 topic="z-$1"
    seq 1 200 | sed 's/^/payload-compressible-compressible-/' | sed = | paste -d: - - >"$S/in.txt"
    kc -P -t "$topic" -p 0 -z "$codec" -K: -l "$S/in.txt"
    kc -C -t "$topic" -p 0 -o beginning -e -f '%k:%s\n' >"$S/out.txt"
    expect_same "$codec roundtrip" "$S/in.txt" "$S/out.txt"
    kc -C -t "$topic" -p 0 -o beginning -e -f '%o\n' >"$S/offs.txt"
    seq 0 199 >"$S/offs.exp"
    expect_same "$codec offsets" "$S/offs.exp" "$S/offs.txt"
}
scenario_compression_gzip() { compression_case gzip; }
scenario_compression_snappy() { compression_case snappy; }
scenario_compression_lz4() { compression_case lz4; }
scenario_compression_zstd() { compression_case zstd; }

scenario_offset_end() {
    printf 'old1\nold2\nold3\n' | kc -P -t tail -p 0
    # Consumer starts at the end; it reports EOF at offset 3 once positioned.
    kc -C -t tail -p 0 -o end -c 3 -f '%s|%o\n' >"$S/out.txt" 2>"$S/err.txt" &
    local cpid=$!
    wait_for_file_match "$S/err.txt" 'Reached end of topic tail \[0\] at offset 3' 20 \
        || { kill "$cpid" 2>/dev/null; return 1; }
    printf 'new1\nnew2\nnew3\n' | kc -P -t tail -p 0
    wait "$cpid"
    printf 'new1|3\nnew2|4\nnew3|5\n' >"$S/exp.txt"
    expect_same "-o end" "$S/exp.txt" "$S/out.txt"
}

scenario_offset_absolute_relative() {
    seq 0 9 | sed 's/^/r/' | kc -P -t rel -p 0
    kc -C -t rel -p 0 -o 7 -e -f '%s|%o\n' >"$S/abs.txt"
    printf 'r7|7\nr8|8\nr9|9\n' >"$S/abs.exp"
    expect_same "-o 7" "$S/abs.exp" "$S/abs.txt"
    kc -C -t rel -p 0 -o -2 -e -f '%s|%o\n' >"$S/tail.txt"
    printf 'r8|8\nr9|9\n' >"$S/tail.exp"
    expect_same "-o -2" "$S/tail.exp" "$S/tail.txt"
    kc -C -t rel -p 0 -o 4 -c 2 -f '%s|%o\n' >"$S/cnt.txt"
    printf 'r4|4\nr5|5\n' >"$S/cnt.exp"
    expect_same "-o 4 -c 2" "$S/cnt.exp" "$S/cnt.txt"
}

scenario_timestamps() {
    local t0 tmid t1
    t0=$(now_ms)
    printf 'a1\na2\na3\n' | kc -P -t ts -p 0
    sleep 1.2
    tmid=$(now_ms)
    sleep 1.2
    printf 'b1\nb2\nb3\n' | kc -P -t ts -p 0
    t1=$(now_ms)
    # Start at a timestamp: only phase-two records.
    kc -C -t ts -p 0 -o "s@$tmid" -e -f '%s|%o\n' >"$S/start.txt"
    printf 'b1|3\nb2|4\nb3|5\n' >"$S/start.exp"
    expect_same "-o s@ts" "$S/start.exp" "$S/start.txt"
    # Stop at a timestamp: only phase-one records.
    kc -C -t ts -p 0 -o beginning -o "e@$tmid" -f '%s|%o\n' >"$S/stop.txt"
    printf 'a1|0\na2|1\na3|2\n' >"$S/stop.exp"
    expect_same "-o e@ts" "$S/stop.exp" "$S/stop.txt"
    # Record timestamps (CreateTime set by the producer) lie in their windows.
    kc -C -t ts -p 0 -o beginning -e -f '%s %T\n' >"$S/ts.txt"
    local v ts bad=0
    while read -r v ts; do
        case "$v" in
            a*) { [ "$ts" -ge "$t0" ] && [ "$ts" -lt "$tmid" ]; } || bad=1 ;;
            b*) { [ "$ts" -gt "$tmid" ] && [ "$ts" -le "$t1" ]; } || bad=1 ;;
        esac
    done <"$S/ts.txt"
    if [ "$bad" != 0 ] || [ "$(wc -l <"$S/ts.txt")" != 6 ]; then
        echo "    record timestamps outside [$t0,$tmid) / ($tmid,$t1]:"; sed 's/^/      /' "$S/ts.txt"
        return 1
    fi
    # ListOffsets by time through -Q (offsets_for_times).
    kc -Q -t "ts:0:$tmid" >"$S/q_mid.txt"
    kc -Q -t "ts:0:0" >"$S/q_zero.txt"
    kc -Q -t "ts:0:$((t1 + 3600000))" >"$S/q_future.txt"
    kc -Q -t "ts:0:-1" >"$S/q_latest.txt"
    kc -Q -t "ts:0:-2" >"$S/q_earliest.txt"
    cat "$S"/q_mid.txt "$S"/q_zero.txt "$S"/q_future.txt "$S"/q_latest.txt "$S"/q_earliest.txt >"$S/q.txt"
    cat >"$S/q.exp" <<'EOF'
ts [0] offset 3
ts [0] offset 0
ts [0] offset -1
ts [0] offset 6
ts [0] offset 0
EOF
    expect_same "kcat -Q" "$S/q.exp" "$S/q.txt"
}

scenario_exit_at_end() {
    # "meta" (3 partitions) holds one record, on partition 0 (scenario_metadata
    # makes it; make it here if run alone).
    if ! kc -L -t meta 2>/dev/null | grep -q 'topic "meta"'; then
        echo "m0" | kc -P -t meta -p 0
    fi
    kc -C -t meta -o beginning -e -f '%s|%p|%o\n' >"$S/all.txt"
    printf 'm0|0|0\n' >"$S/all.exp"
    expect_same "-e over 3 partitions" "$S/all.exp" "$S/all.txt"
    kc -C -t meta -p 2 -o beginning -e -f '%s|%p|%o\n' >"$S/empty.txt"
    : >"$S/empty.exp"
    expect_same "-e on an empty partition" "$S/empty.exp" "$S/empty.txt"
}

scenario_keyed_partitioning() {
    # librdkafka's default partitioner (consistent_random) puts a keyed record
    # on crc32(key) % partition_count.
    local k i
    for i in 0 1 2; do for k in $(seq 0 9); do echo "key$k:v$k-$i"; done; done >"$S/in.txt"
    kc -P -t keyed -K: -l "$S/in.txt"
    kc -C -t keyed -o beginning -e -f '%p|%o|%k|%s\n' >"$S/out.txt"
    python3 - "$S/in.txt" >"$S/exp.txt" <<'EOF'
import sys, zlib
per_part = {0: [], 1: [], 2: []}
for line in open(sys.argv[1], encoding="utf-8"):
    k, v = line.rstrip("\n").split(":", 1)
    p = zlib.crc32(k.encode()) % 3
    per_part[p].append((k, v))
for p in sorted(per_part):
    for o, (k, v) in enumerate(per_part[p]):
        print(f"{p}|{o}|{k}|{v}")
EOF
    sort -t'|' -k1,1n -k2,2n "$S/out.txt" >"$S/out.sorted"
    expect_same "keyed partitioning" "$S/exp.txt" "$S/out.sorted"
}

scenario_offset_out_of_range() {
    seq 0 9 | sed 's/^/o/' | kc -P -t oor -p 0
    # Default auto.offset.reset (largest): the OFFSET_OUT_OF_RANGE fetch error
    # makes librdkafka reset to the end (offset 10), then -e exits.
    kc -C -t oor -p 0 -o 1000 -e -f '%s\n' >"$S/reset.txt" 2>"$S/reset.err"
    : >"$S/empty.exp"
    expect_same "-o 1000 output" "$S/empty.exp" "$S/reset.txt"
    grep -q 'offset reset (at offset 1000, broker 1) to END.*Offset out of range' "$S/reset.err" \
        || { echo "    no offset-reset log in stderr:"; sed 's/^/      /' "$S/reset.err"; return 1; }
    grep -q 'Reached end of topic oor \[0\] at offset 10' "$S/reset.err" \
        || { echo "    no EOF at offset 10 in stderr:"; sed 's/^/      /' "$S/reset.err"; return 1; }
    # auto.offset.reset=error surfaces the broker's error code.
    local rc=0
    kc -C -t oor -p 0 -o 1000 -e -X topic.auto.offset.reset=error -f '%s\n' \
        >"$S/err.txt" 2>"$S/err.err" || rc=$?
    [ "$rc" = 1 ] || { echo "    expected exit 1, got $rc"; return 1; }
    grep -q 'Topic oor \[0\] error: .*Broker: Offset out of range' "$S/err.err" \
        || { echo "    unexpected stderr:"; sed 's/^/      /' "$S/err.err"; return 1; }
}

scenario_message_too_large() {
    # 2 MB > the broker's default message.max.bytes (1048588): rejected with
    # MESSAGE_TOO_LARGE, nothing stored.
    python3 -c 'import os, sys; sys.stdout.buffer.write(os.urandom(2000000))' >"$S/big.bin"
    local rc=0
    kc -P -t toolarge -p 0 -X message.max.bytes=3000000 "$S/big.bin" 2>"$S/p.err" || rc=$?
    [ "$rc" != 0 ] || { echo "    producing 2 MB succeeded (exit 0)"; return 1; }
    grep -q 'Delivery failed for message: Broker: Message size too large' "$S/p.err" \
        || { echo "    unexpected stderr:"; sed 's/^/      /' "$S/p.err"; return 1; }
    echo small | kc -P -t toolarge -p 0
    kc -C -t toolarge -p 0 -o beginning -e -f '%s|%o\n' >"$S/out.txt"
    printf 'small|0\n' >"$S/exp.txt"
    expect_same "after rejected message" "$S/exp.txt" "$S/out.txt"
}

scenario_fetch_max_bytes_smaller_than_batch() {
    # KIP-74: the first batch is returned whole even when larger than the fetch
    # limits, so a consumer with 1 KiB limits still gets a 300 KB message.
    python3 -c 'import os, sys; sys.stdout.buffer.write(os.urandom(300000))' >"$S/b.bin"
    kc -P -t smallfetch -p 0 "$S/b.bin"
    echo tiny | kc -P -t smallfetch -p 0
    local lim=(-X fetch.message.max.bytes=1024 -X fetch.max.bytes=1024 -X message.max.bytes=1024)
    kc -C -t smallfetch -p 0 -o beginning -e "${lim[@]}" -f '%S|%o\n' >"$S/out.txt"
    printf '300000|0\n4|1\n' >"$S/exp.txt"
    expect_same "small fetch limits" "$S/exp.txt" "$S/out.txt"
    kc -C -t smallfetch -p 0 -o beginning -c 1 "${lim[@]}" -f '%s' >"$S/out.bin"
    cmp "$S/b.bin" "$S/out.bin"
}

scenario_bulk() {
    # 50,000 small records (many producer batches, many fetch responses).
    seq 1 50000 >"$S/in.txt"
    kc -P -t bulk -p 0 -l "$S/in.txt"
    kc -C -t bulk -p 0 -o beginning -e -f '%s\n' >"$S/out.txt"
    cmp "$S/in.txt" "$S/out.txt"
    kc -C -t bulk -p 0 -o 49990 -e -f '%o %s\n' >"$S/tail.txt"
    seq 49990 49999 | awk '{ print $1, $1 + 1 }' >"$S/tail.exp"
    expect_same "bulk tail" "$S/tail.exp" "$S/tail.txt"
}

scenario_idempotent_produce() {
    # kcat's librdkafka (2.0.2) with enable.idempotence=true: InitProducerId, producer ids and
    # sequences on every batch; 20,000 records on 3 partitions, each read back once, in order.
    seq 1 20000 >"$S/in.txt"
    kc -P -t idem -X enable.idempotence=true -X acks=all -l "$S/in.txt"
    for p in 0 1 2; do kc -C -t idem -p "$p" -o beginning -e -f '%s\n'; done | sort -n >"$S/out.txt"
    cmp "$S/in.txt" "$S/out.txt"
    # Each partition in produce order (the default partitioner spreads unkeyed records).
    for p in 0 1 2; do
        kc -C -t idem -p "$p" -o beginning -e -f '%s\n' >"$S/p$p.txt"
        sort -n "$S/p$p.txt" | cmp - "$S/p$p.txt"
    done
}

scenario_restart_persistence() {
    # Data written before a SIGTERM stop is all there after a restart on the
    # same data dir, and offsets continue.
    local tmid
    printf 'p0:a\np1:b\n' | kc -P -t persist -p 0 -K: -H h=1
    sleep 1.1; tmid=$(now_ms); sleep 1.1
    printf 'p2:c\np3:d\n' | kc -P -t persist -p 0 -K: -z gzip
    kc -C -t persist -p 0 -o beginning -e -Z -f '%k|%s|%h|%o|%T\n' >"$S/before.txt"
    kc -Q -t "persist:0:$tmid" >"$S/q_before.txt"
    stop_broker || { echo "    broker needed SIGKILL"; return 1; }
    start_broker "$PORT"
    kc -C -t persist -p 0 -o beginning -e -Z -f '%k|%s|%h|%o|%T\n' >"$S/after.txt"
    expect_same "records after restart" "$S/before.txt" "$S/after.txt"
    kc -Q -t "persist:0:$tmid" >"$S/q_after.txt"
    printf 'persist [0] offset 2\n' >"$S/q.exp"
    expect_same "-Q before restart" "$S/q.exp" "$S/q_before.txt"
    expect_same "-Q after restart" "$S/q.exp" "$S/q_after.txt"
    echo 'p4:e' | kc -P -t persist -p 0 -K:
    kc -C -t persist -p 0 -o -1 -e -f '%k|%s|%o\n' >"$S/new.txt"
    printf 'p4|e|4\n' >"$S/new.exp"
    expect_same "produce after restart" "$S/new.exp" "$S/new.txt"
    # Topics from earlier scenarios (if they ran) survive too.
    if [ -s "$WORK/produce_keys_headers/exp.txt" ]; then
        kc -C -t kv -p 0 -o beginning -e -Z -f '%K:%k|%S:%s|%h|%p|%o\n' >"$S/kv.txt"
        expect_same "kv after restart" "$WORK/produce_keys_headers/exp.txt" "$S/kv.txt"
    fi
}

# last_assignment FILE: the partitions of kcat -G's last rebalance line.
last_assignment() {
    { grep 'rebalanced' "$1" 2>/dev/null || true; } | tail -1 | sed -n 's/.*assigned: //p'
}

scenario_group_balanced() {
    # Two balanced consumers (kcat -G) in one group split a 3-partition topic
    # and together print every record exactly once; when one stops (SIGTERM:
    # kcat closes the consumer, which leaves the group) the other takes over
    # every partition and prints what is produced afterwards.
    local c1 c2 a1 a2 split=0
    printf 'seed\n' | kc -P -t grp
    kcat -b "$BOOT" -u -G g-balanced -X auto.offset.reset=earliest -f '%p %s\n' grp \
        >"$S/c1.out" 2>"$S/c1.err" &
    c1=$!
    kcat -b "$BOOT" -u -G g-balanced -X auto.offset.reset=earliest -f '%p %s\n' grp \
        >"$S/c2.out" 2>"$S/c2.err" &
    c2=$!
    # Wait for the group to be Stable with both members holding part of it.
    for _ in $(seq 1 300); do
        a1="$(last_assignment "$S/c1.err")"; a2="$(last_assignment "$S/c2.err")"
        if [ -n "$a1" ] && [ -n "$a2" ] && [ "$(echo "$a1, $a2" | tr ',' '\n' | grep -c 'grp' || true)" = 3 ]; then
            split=1; break
        fi
        sleep 0.1
    done
    [ "$split" = 1 ] || { echo "    no split: c1 '$a1', c2 '$a2'"; cat "$S/c1.err" "$S/c2.err"; return 1; }
    # Keyed, so the records spread over the partitions (by key hash).
    seq -f 'r%05g' 1 300 | awk '{ print $1 ":" $1 }' | kc -P -t grp -K:
    for _ in $(seq 1 300); do
        [ "$(cat "$S/c1.out" "$S/c2.out" | grep -c ' r' || true)" -ge 300 ] && break
        sleep 0.1
    done
    cat "$S/c1.out" "$S/c2.out" | awk '$2 ~ /^r/ { print $2 }' | sort >"$S/got.txt"
    seq -f 'r%05g' 1 300 >"$S/exp.txt"
    expect_same "records across both members" "$S/exp.txt" "$S/got.txt"
    grep -q ' r' "$S/c1.out" && grep -q ' r' "$S/c2.out" \
        || { echo "    one member got nothing"; return 1; }
    kill -TERM "$c2"
    wait "$c2" || true
    wait_for_file_match "$S/c1.err" 'assigned: grp \[0\], grp \[1\], grp \[2\]' 30
    seq -f 's%05g' 1 100 | awk '{ print $1 ":" $1 }' | kc -P -t grp -K:
    for _ in $(seq 1 300); do
        [ "$(grep -c ' s[0-9]' "$S/c1.out" || true)" -ge 100 ] && break
        sleep 0.1
    done
    kill -TERM "$c1"
    wait "$c1" || true
    awk '$2 ~ /^s[0-9]/ { print $2 }' "$S/c1.out" | sort >"$S/got2.txt"
    seq -f 's%05g' 1 100 >"$S/exp2.txt"
    expect_same "records after the handover" "$S/exp2.txt" "$S/got2.txt"
}

scenario_group_resume() {
    # A balanced consumer reads 6 of 10 records and exits (closing commits the
    # offsets it stored); the next run in the same group prints exactly the
    # remaining 4, and a third run finds nothing new.
    seq -f 'm%g' 1 10 | kc -P -t grp-resume -p 0
    kc -G g-resume -X auto.offset.reset=earliest -c 6 -f '%o %s\n' grp-resume >"$S/first.txt"
    kc -G g-resume -X auto.offset.reset=earliest -e -f '%o %s\n' grp-resume >"$S/second.txt"
    seq 0 5 | awk '{ print $1, "m" $1 + 1 }' >"$S/first.exp"
    seq 6 9 | awk '{ print $1, "m" $1 + 1 }' >"$S/second.exp"
    expect_same "first run" "$S/first.exp" "$S/first.txt"
    expect_same "resumed run" "$S/second.exp" "$S/second.txt"
    kc -G g-resume -X auto.offset.reset=earliest -e -f '%o %s\n' grp-resume >"$S/third.txt"
    [ ! -s "$S/third.txt" ] || { echo "    third run re-read:"; cat "$S/third.txt"; return 1; }
}

# ------------------------------------------------------------------ driver

ALL_SCENARIOS=(
    metadata
    produce_keys_headers
    binary_roundtrip
    compression_gzip
    compression_snappy
    compression_lz4
    compression_zstd
    offset_end
    offset_absolute_relative
    timestamps
    exit_at_end
    keyed_partitioning
    offset_out_of_range
    message_too_large
    fetch_max_bytes_smaller_than_batch
    bulk
    idempotent_produce
    restart_persistence
    group_balanced
    group_resume
)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL_SCENARIOS[@]}"); fi

passed=0
failed=0
failed_names=()
for name in "${SCENARIOS[@]}"; do
    if ! declare -F "scenario_$name" >/dev/null; then
        echo "FAIL $name (no such scenario)"
        failed=$((failed + 1)); failed_names+=("$name"); continue
    fi
    S="$WORK/$name"
    mkdir -p "$S"
    start=$(date +%s)
    set +e
    ( set -e; "scenario_$name" ) >"$S/scenario.log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    if [ "$rc" = 0 ]; then
        echo "PASS $name (${secs}s)"
        passed=$((passed + 1))
    else
        echo "FAIL $name (exit $rc, ${secs}s)"
        sed 's/^/    | /' "$S/scenario.log"
        failed=$((failed + 1)); failed_names+=("$name")
    fi
done

if ! kill -0 "$(broker_pid)" 2>/dev/null; then
    echo "broker exited during the run; its log tail:"
    tail -20 "$WORK/gregor.log" | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/    | /"
fi
if [ "$failed" -gt 0 ]; then
    echo "failed scenarios: ${failed_names[*]}"
    echo "broker log tail:"
    tail -20 "$WORK/gregor.log" | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/    | /"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
