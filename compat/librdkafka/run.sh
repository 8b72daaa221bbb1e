#!/usr/bin/env bash
# Run librdkafka's own test suite (Debian's source package, tests/) against a
# fresh gregor (one broker, or GREGOR_BROKERS of them).  See README.md.
#
# Usage:
#   compat/librdkafka/run.sh                 # setup (idempotent) + run allowlist.txt
#   compat/librdkafka/run.sh 0001 "0022 -l"  # run just these allow-list-style entries
#   compat/librdkafka/run.sh --setup-only    # only prepare the suite
#
# Environment knobs:
#   GREGOR_PORT (default 29092)   port for the broker we start (the next free
#                                 one is used if it is taken); below the kernel's
#                                 ephemeral range (32768-60999), so the other suites'
#                                 free ports and outgoing connections never hold it
#   GREGOR_BROKERS (default 1)    brokers in the cluster under test (gregor dev
#                                 --brokers N on GREGOR_PORT and the ports after
#                                 it; internal listeners 100 ports above)
#   TEST_TIMEOUT (default 180)    per-test timeout in seconds (an allow-list entry's
#                                 TIMEOUT=n overrides it; RETRIES=n runs a failed entry
#                                 again up to n times)
#   ALLOWLIST   (default allowlist.txt next to this script)
#   GREGOR_BIN  (default <repo>/target/release/gregor)
#   KEEP_LOGS=1                   keep the per-test logs dir
#   SHARDS      (default 1)       split the tests over this many clusters run side by
#                                 side (shard i on GREGOR_PORT + 300*i, its own data and
#                                 logs); the tests mostly wait on the clients' timers, so
#                                 two shards take little more than half the time
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$HERE/work"
PORT="${GREGOR_PORT:-29092}"
NBROKERS="${GREGOR_BROKERS:-1}"
TEST_TIMEOUT="${TEST_TIMEOUT:-180}"
ALLOWLIST="${ALLOWLIST:-$HERE/allowlist.txt}"
GREGOR_BIN="${GREGOR_BIN:-$REPO/target/release/gregor}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "[librdkafka-compat] $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi

# ---------------------------------------------------------------- setup ----

# Add deb-src entries mirroring the machine's active Debian "deb" entries.
add_deb_src() {
    local out=/etc/apt/sources.list.d/gregor-librdkafka-deb-src.sources
    if [ -s "$out" ]; then return 0; fi
    local tmp
    tmp="$(mktemp)"
    # deb822 files: copy each Debian stanza with "Types: deb-src".
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        [ "$f" = "$out" ] && continue
        awk 'BEGIN { RS=""; ORS="\n\n" }
             {
               if ($0 !~ /(^|\n)Types:[^\n]*deb/) next
               if ($0 !~ /(^|\n)URIs:[^\n]*debian/) next
               if ($0 ~ /(^|\n)Enabled:[ \t]*no/) next
               n = split($0, L, "\n"); s = ""
               for (i = 1; i <= n; i++) {
                 if (L[i] ~ /^Types:/) L[i] = "Types: deb-src"
                 s = s L[i] "\n"
               }
               printf "%s\n", s
             }' "$f" >>"$tmp"
    done
    # One-line format (sources.list and *.list)
    local lists=()
    [ -e /etc/apt/sources.list ] && lists+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list; do [ -e "$f" ] && lists+=("$f"); done
    local tmpl
    tmpl="$(mktemp)"
    if [ ${#lists[@]} -gt 0 ]; then
        grep -h -E '^[[:space:]]*deb[[:space:]].*debian' "${lists[@]}" 2>/dev/null |
            sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' >"$tmpl" || true
    fi
    if [ ! -s "$tmp" ] && [ ! -s "$tmpl" ]; then
        log "no Debian apt sources found to derive deb-src entries from"
        rm -f "$tmp" "$tmpl"
        return 1
    fi
    if [ -s "$tmp" ]; then
        $SUDO install -m 644 "$tmp" "$out"
    fi
    if [ -s "$tmpl" ]; then
        $SUDO install -m 644 "$tmpl" /etc/apt/sources.list.d/gregor-librdkafka-deb-src.list
        [ -s "$out" ] || echo "# see gregor-librdkafka-deb-src.list" | $SUDO tee "$out" >/dev/null
    fi
    rm -f "$tmp" "$tmpl"
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq || return 1
}

find_src_dir() {
    local d
    for d in "$WORK"/librdkafka-*/; do
        [ -d "$d/tests" ] && { echo "${d%/}"; return 0; }
    done
    return 1
}

# patch_suite SRC: the suite's local changes, to 0098 only. Succeeds when it changed something
# (the tests then need a rebuild).
#  - Its Java-producer half runs only when KAFKA_PATH (Kafka's jars) is set, so its
#    librdkafka-producer half runs here.
#  - It does not delete each topic just before closing the consumer assigned to it. When the
#    consumer's metadata refresh (which the fetch's UNKNOWN_TOPIC_OR_PARTITION starts) removes
#    the partition before close() has stopped it, librdkafka 2.0.2 waits in close() forever
#    (the hang of librdkafka issue #4362); on 2 busy cores that happened in 3 of 4 runs. Every
#    topic it makes has a random name, so leaving them changes nothing else.
patch_suite() {
    local f="$1/tests/0098-consumer-txn.cpp" changed=1
    [ -f "$f" ] || return 1
    if ! grep -q 'gregor: needs Kafka jars' "$f"; then
        sed -i -E 's|^( *)do_test_consumer_txn_test\(true /\* with java producer \*/\);|\1if (test_getenv("KAFKA_PATH", NULL)) /* gregor: needs Kafka jars */\n\1  do_test_consumer_txn_test(true /* with java producer */);|' "$f"
        changed=0
    fi
    if grep -q '^ *Test::delete_topic(c, topic_name.c_str());' "$f"; then
        sed -i -E 's|^( *)Test::delete_topic\(c, topic_name.c_str\(\)\);|\1/* gregor: not deleted before close, see run.sh */|' "$f"
        changed=0
    fi
    return $changed
}

setup_suite() {
    mkdir -p "$WORK"
    local src
    if src="$(find_src_dir)" && [ -x "$src/tests/test-runner" ]; then
        if patch_suite "$src"; then
            make -j"$(nproc 2>/dev/null || echo 2)" -C "$src/tests" build >"$WORK/make-tests.log" 2>&1 ||
                { log "test rebuild failed; see $WORK/make-tests.log"; return 1; }
        fi
        SRC="$src"
        return 0
    fi
    log "setting up librdkafka test suite in $WORK"
    if ! command -v dpkg-source >/dev/null; then
        $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq && $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq dpkg-dev >/dev/null || return 1
    fi
    if ! src="$(find_src_dir)"; then
        add_deb_src || return 1
        (cd "$WORK" && apt-get source -qq librdkafka) || {
            $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
            (cd "$WORK" && apt-get source -qq librdkafka) || return 1
        }
        src="$(find_src_dir)" || return 1
    fi
    if [ ! -e "$WORK/.build-dep-done" ]; then
        add_deb_src || return 1
        $SUDO apt-get -o DPkg::Lock::Timeout=900 build-dep -y -qq librdkafka >"$WORK/build-dep.log" 2>&1 || {
            $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
            $SUDO apt-get -o DPkg::Lock::Timeout=900 build-dep -y -qq librdkafka >"$WORK/build-dep.log" 2>&1 ||
                { tail -20 "$WORK/build-dep.log" >&2; return 1; }
        }
        touch "$WORK/.build-dep-done"
    fi
    local jobs
    jobs="$(nproc 2>/dev/null || echo 2)"
    (
        cd "$src" || exit 1
        if [ ! -e Makefile.config ]; then
            ./configure --no-download >"$WORK/configure.log" 2>&1 || exit 1
        fi
        make -j"$jobs" libs >"$WORK/make-libs.log" 2>&1 || exit 1
        patch_suite "$src"
        make -j"$jobs" -C tests build >"$WORK/make-tests.log" 2>&1 || exit 1
    ) || { log "build failed; see $WORK/*.log"; return 1; }
    SRC="$src"
    [ -x "$SRC/tests/test-runner" ]
}

build_gregor() {
    if [ -x "$GREGOR_BIN" ]; then return 0; fi
    log "building gregor (cargo build --release)"
    (cd "$REPO" && cargo build --release) >&2 || return 1
    [ -x "$GREGOR_BIN" ]
}

# ---------------------------------------------------------------- broker ---

GREGOR_PID=""
TEST_PID=""
DATA_DIR=""
LOGDIR=""
SHARD_PIDS=()
cleanup() {
    if [ ${#SHARD_PIDS[@]} -gt 0 ]; then
        kill "${SHARD_PIDS[@]}" 2>/dev/null # each stops its own test and cluster
        wait "${SHARD_PIDS[@]}" 2>/dev/null
    fi
    if [ -n "$TEST_PID" ]; then
        kill "$TEST_PID" 2>/dev/null
        wait "$TEST_PID" 2>/dev/null
    fi
    stop_gregor
    if [ -n "$LOGDIR" ] && [ "${KEEP_LOGS:-0}" != 1 ]; then rm -rf "$LOGDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_gregor() {
    if [ -n "$GREGOR_PID" ]; then
        kill "$GREGOR_PID" 2>/dev/null
        for _ in $(seq 1 20); do
            kill -0 "$GREGOR_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$GREGOR_PID" 2>/dev/null
        wait "$GREGOR_PID" 2>/dev/null
        GREGOR_PID=""
    fi
    [ -n "$DATA_DIR" ] && rm -rf "$DATA_DIR"
    DATA_DIR=""
}

BROKER_SCENARIO=""
# start_gregor [scenario]: scenario is one of tests/scenarios/*.json that we
# can express as gregor settings: "default" or "noautocreate".
start_gregor() {
    local scenario="${1:-default}" autocreate=true
    case "$scenario" in
        default) autocreate=true ;;
        noautocreate) autocreate=false ;;
        *) log "unsupported test scenario $scenario"; return 1 ;;
    esac
    local i
    for ((i = 0; i < NBROKERS; i++)); do
        if port_open "$((PORT + i))" || port_open "$((PORT + 100 + i))"; then
            log "port $((PORT + i)) or $((PORT + 100 + i)) already in use; set GREGOR_PORT"
            return 1
        fi
    done
    DATA_DIR="$(mktemp -d /tmp/gregor-librdkafka.XXXXXX)"
    # Broker settings of the suite's "default" scenario (tests/scenarios/
    # default.json): auto-created topics get 4 partitions, replication factor 3
    # (capped by gregor at the brokers there are).
    cat >"$DATA_DIR/gregor.toml" <<TOML
"num.partitions" = 4
"auto.create.topics.enable" = $autocreate
TOML
    BROKER_SCENARIO="$scenario"
    "$GREGOR_BIN" dev --brokers "$NBROKERS" --data-dir "$DATA_DIR/data" --port "$PORT" \
        --internal-port "$((PORT + 100))" \
        --config "$DATA_DIR/gregor.toml" >>"$LOGDIR/gregor.log" 2>&1 &
    GREGOR_PID=$!
    local list="127.0.0.1:$PORT"
    for ((i = 1; i < NBROKERS; i++)); do list="$list,127.0.0.1:$((PORT + i))"; done
    for _ in $(seq 1 100); do
        if port_open "$((PORT + NBROKERS - 1))"; then
            echo "metadata.broker.list=$list" >"$LOGDIR/test.conf"
            return 0
        fi
        kill -0 "$GREGOR_PID" 2>/dev/null || break
        sleep 0.2
    done
    log "gregor did not come up; log:"
    tail -20 "$LOGDIR/gregor.log" >&2
    return 1
}

# ---------------------------------------------------------------- tests ----

read_allowlist() {
    # "NNNN [runner flags]" from each non-comment line, e.g. "0039 -L"
    sed -e 's/#.*//' "$ALLOWLIST" | awk 'NF { $1 = $1; print }'
}

# Run one test number (plus optional runner flags such as -l / -L) in its own
# test-runner process.  Sets STATUS (PASS/FAIL/TIMEOUT/SKIP) and LAST_LOG.
run_one() {
    local num="$1"; shift
    local logf
    logf="$LOGDIR/${num}$(printf '%s' "$*" | tr -c 'A-Za-z0-9_.-' '_').log"
    local rc a envs=() flags=() timeout="$TEST_TIMEOUT"
    RETRIES=0
    # TIMEOUT=seconds and RETRIES=n are this script's own (an entry's timeout; how many
    # times a failed entry is run again); other NAME=VALUE tokens (e.g.
    # SUBTESTS=DeleteTopics) go to the environment, the rest are test-runner flags.
    for a in "$@"; do
        if [[ "$a" =~ ^TIMEOUT=([0-9]+)$ ]]; then timeout="${BASH_REMATCH[1]}"
        elif [[ "$a" =~ ^RETRIES=([0-9]+)$ ]]; then RETRIES="${BASH_REMATCH[1]}"
        elif [[ "$a" =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$a")
        else flags+=("$a"); fi
    done
    # Background + wait so that INT/TERM reach our trap at once; the subshell
    # execs timeout, so TEST_PID is timeout's pid and killing it stops the test.
    (
        cd "$SRC/tests" || exit 1
        export LD_LIBRARY_PATH="$SRC/src:$SRC/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export TESTS="$num"
        exec env "${envs[@]}" timeout -k 10 "$timeout" \
            stdbuf -oL -eL ./test-runner -p1 "${flags[@]}" </dev/null
    ) >"$logf" 2>&1 &
    TEST_PID=$!
    wait "$TEST_PID" 2>/dev/null # no "Aborted" job notices: the log has it
    rc=$?
    TEST_PID=""
    if [ $rc -eq 124 ] || [ $rc -eq 137 ] ||
        grep -qa 'timed out (timeout set to' "$logf"; then
        STATUS=TIMEOUT # ours, or the runner's own per-test timeout
    elif [ $rc -ne 0 ] || grep -qa 'Test .* FAILED' "$logf"; then
        STATUS=FAIL
    elif grep -qa 'Test .* PASSED' "$logf"; then
        STATUS=PASS
    else
        STATUS=SKIP # ran nothing (filtered, or skipped by the test itself)
    fi
    LAST_LOG="$logf"
}

# failure_context LOG: why a test failed, for a reader who has only this script's output (CI
# keeps no files): its failure lines, the lines before the first of them, and gregor's last
# warnings.
failure_context() {
    local first
    grep -aE 'FAIL|Assert|SKIP' "$1" | head -6 | cut -c1-300 | sed 's/^/    | /'
    first=$(grep -naE 'FAIL|Assert' "$1" | head -1 | cut -d: -f1)
    if [ -n "$first" ]; then
        # Without the runner's once-a-second "N test(s) running" lines, which fill a hang.
        echo "    | --- the test's log before its first failure:"
        head -n "$first" "$1" | grep -avE '[0-9]+ test\(s\) running' | tail -n 25 | cut -c1-240 |
            sed 's/^/    | /'
    fi
    # Not openraft's notes on the votes of the cluster's first election, which every run has.
    local warnings
    warnings=$(grep -aE ' (WARN|ERROR) ' "$LOGDIR/gregor.log" 2>/dev/null |
        grep -av 'A message will be ignored because vote changed' | tail -n 8)
    if [ -n "$warnings" ]; then
        echo "    | --- gregor's last warnings:"
        printf '%s\n' "$warnings" | cut -c1-300 | sed 's/^/    | /'
    fi
}

# run_shards ENTRY...: SHARDS copies of this script, each with a cluster on its own ports, run
# side by side and take the entries in order from one shared queue (SHARD_QUEUE), so a long
# test holds up one shard only. Their lines stream with a "[shard i]" prefix; at the end each
# failing shard's reasons are repeated, then one total line.
run_shards() {
    local n="$SHARDS" i outs=() pids=() rc=0 pass=0 fail=0 line queue
    queue="$(mktemp /tmp/librdkafka-queue.XXXXXX)"
    printf '%s\n' "$@" >"$queue"
    for ((i = 0; i < n; i++)); do
        outs+=("$(mktemp /tmp/librdkafka-shard.XXXXXX)")
        SHARDS=1 SHARD_QUEUE="$queue" GREGOR_PORT=$((PORT + 300 * i)) \
            bash "$HERE/run.sh" >"${outs[i]}" 2>&1 &
        pids+=($!)
        SHARD_PIDS+=($!)
        tail -n +1 -F --pid=$! "${outs[i]}" 2>/dev/null | sed -u "s/^/[shard $i] /" &
    done
    for ((i = 0; i < n; i++)); do
        wait "${pids[i]}" || rc=1
    done
    SHARD_PIDS=()
    wait # the tails: each ends once its shard has
    for ((i = 0; i < n; i++)); do
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "${outs[i]}" | tail -1)
        [ -n "$line" ] || { rc=1; fail=$((fail + 1)); line="0 passed, 0 failed"; }
        pass=$((pass + ${line%% passed*})); line=${line#*passed, }; fail=$((fail + ${line%% failed}))
    done
    for ((i = 0; i < n; i++)); do
        if grep -q 'not passing:' "${outs[i]}"; then
            echo "--- shard $i: why its tests did not pass"
            sed -n '/not passing:/,$p' "${outs[i]}" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
        fi
        rm -f "${outs[i]}"
    done
    [ -s "$queue" ] && { echo "entries never run: $(tr '\n' ' ' <"$queue")"; rc=1; }
    rm -f "$queue" "$queue.lock"
    echo "$pass passed, $fail failed"
    [ "$rc" -eq 0 ] && [ "$fail" -eq 0 ]
}

# next_entry: the next entry to run into ENTRY, from SHARD_QUEUE (taken under a lock, as other
# shards take from it too) or from the TESTS_LEFT array; fails when none is left.
next_entry() {
    if [ -n "${SHARD_QUEUE:-}" ]; then
        ENTRY=$(
            exec 9>"$SHARD_QUEUE.lock"
            flock 9 || exit 1
            head -n 1 "$SHARD_QUEUE"
            sed -i 1d "$SHARD_QUEUE"
        )
        [ -n "$ENTRY" ]
    else
        [ ${#TESTS_LEFT[@]} -gt 0 ] || return 1
        ENTRY=${TESTS_LEFT[0]}
        TESTS_LEFT=("${TESTS_LEFT[@]:1}")
    fi
}

# ensure_gregor SCENARIO: a running cluster for SCENARIO, (re)started when it is another
# scenario's or has died.
ensure_gregor() {
    if [ "$1" != "$BROKER_SCENARIO" ] || ! kill -0 "$GREGOR_PID" 2>/dev/null; then
        stop_gregor
        start_gregor "$1" || { log "cannot start gregor"; exit 2; }
    fi
}

main() {
    local setup_only=0
    local tests=()
    for a in "$@"; do
        case "$a" in
            --setup-only) setup_only=1 ;;
            *) tests+=("$a") ;;
        esac
    done
    local t0=$SECONDS
    setup_suite || { log "suite setup failed"; exit 2; }
    log "suite ready in $SRC ($((SECONDS - t0))s)"
    [ "$setup_only" = 1 ] && exit 0
    build_gregor || { log "gregor build failed"; exit 2; }

    if [ ${#tests[@]} -eq 0 ] && [ -z "${SHARD_QUEUE:-}" ]; then
        mapfile -t tests < <(read_allowlist)
    fi
    [ ${#tests[@]} -gt 0 ] || [ -n "${SHARD_QUEUE:-}" ] || { log "no tests selected"; exit 2; }
    TESTS_LEFT=("${tests[@]}")
    if [ "${SHARDS:-1}" -gt 1 ]; then
        run_shards "${tests[@]}"
        exit $?
    fi

    local p
    for p in $(seq "$PORT" $((PORT + 50))); do
        port_open "$p" || { PORT=$p; break; }
    done
    LOGDIR="$(mktemp -d /tmp/librdkafka-compat-logs.XXXXXX)"
    [ "${KEEP_LOGS:-0}" = 1 ] && log "logs in $LOGDIR"

    # The runner reads test.conf from its cwd (tests/) unless RDKAFKA_TEST_CONF
    # points elsewhere.  BROKERS is only read by helpers that shell out to
    # Kafka's CLI tools (they also need KAFKA_PATH, which we never set).
    export RDKAFKA_TEST_CONF="$LOGDIR/test.conf" # written by start_gregor
    export BROKERS="127.0.0.1:$PORT"
    unset KAFKA_PATH ZK_ADDRESS
    # gregor speaks the Kafka 4.x protocol.  The suite (librdkafka 2.0.2) only
    # uses the version for ">= X" gates (the highest is 3.1), so 4.0.0 enables
    # every version-gated test.
    export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
    export CI=true # the runner's CI mode: timeouts x3

    local pass=0 fail=0 failed=() reasons=() why
    local entry start dur
    while next_entry; do
        entry=$ENTRY
        # shellcheck disable=SC2086
        set -- $entry
        # "-s <scenario>" selects a test scenario: (re)start the broker to
        # match it (tests of another scenario are skipped by the runner).
        local scenario=default prev=""
        for a in "$@"; do
            [ "$prev" = "-s" ] && scenario="$a"
            prev="$a"
        done
        ensure_gregor "$scenario"
        start=$SECONDS
        run_one "$@"
        local tries=0
        while [ "$STATUS" != PASS ] && [ "$tries" -lt "$RETRIES" ]; do
            # An entry marked RETRIES=n in the allow-list (a test with a known client-side
            # race); the failure stays visible in the output.
            tries=$((tries + 1))
            printf '%-8s %-34s %4ss (run %s; again)\n' "$STATUS" "$entry" "$((SECONDS - start))" "$tries"
            failure_context "$LAST_LOG"
            ensure_gregor "$scenario"
            start=$SECONDS
            run_one "$@"
        done
        dur=$((SECONDS - start))
        if [ "$STATUS" = PASS ]; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1)); failed+=("$entry")
        fi
        printf '%-8s %-34s %4ss\n' "$STATUS" "$entry" "$dur"
        if [ "$STATUS" != PASS ]; then
            why=$(failure_context "$LAST_LOG")
            printf '%s\n' "$why"
            reasons+=("$STATUS $entry (${dur}s)" "$why")
        fi
        if ! kill -0 "$GREGOR_PID" 2>/dev/null; then
            log "gregor died during test $entry (restarted for the next test); log tail:"
            tail -20 "$LOGDIR/gregor.log" >&2
            GREGOR_PID=""
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        # Again at the end, where a caller that shows only the last lines sees why.
        log "not passing: ${failed[*]}"
        printf '%s\n' "${reasons[@]}"
    fi
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

main "$@"; exit $?
