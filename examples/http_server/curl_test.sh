#!/usr/bin/env bash
# End-to-end check of the http_server example with a real HTTP client (curl)
# on loopback. Usage: curl_test.sh <path to keysem_example_http_server>
#
# The server runs with a limit of 2 per tenant (gold: 3 from a --tiers file,
# vip: 5 from --tier), 1 waiter allowed and a 1 s acquire timeout, so every
# answer below is forced, not a matter of timing: the script polls /metrics
# until the server is in the state it needs.
set -euo pipefail

server_bin=${1:?usage: $0 <keysem_example_http_server>}
if ! command -v curl >/dev/null 2>&1; then
    echo "SKIP: curl is not installed (./scripts/demo and ./scripts/test install it)"
    exit 77
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
    fi
    # Background curls of this script only (jobs -p lists our own children).
    local pids
    pids=$(jobs -p)
    [[ -z $pids ]] || kill $pids 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "--- server output:" >&2
    cat "$work/server.log" >&2 || true
    exit 1
}

printf '# paying tenants\ngold 3\n\nvip 4  # overridden by --tier below\n' >"$work/tiers"
# Bad command lines are refused with status 2 before anything listens.
for bad in "--tier gold" "--tier gold=0" "--tier 'a b'=3" "--limit x" "--tiers $work/none" \
    "--redis nohost" "--redis host:x" "--lease-ms 0" "--port 1,2"; do
    status=0
    eval "\"\$server_bin\" serve $bad" >/dev/null 2>&1 || status=$?
    [[ $status == 2 ]] || fail "serve $bad: expected exit status 2, got $status"
done
echo "ok: bad command lines -> 2"

"$server_bin" serve --port 0 --port-file "$work/port" --limit 2 --max-waiting 1 \
    --timeout-ms 1000 --tiers "$work/tiers" --tier vip=5 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    [[ -s $work/port ]] && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited early"
    sleep 0.05
done
[[ -s $work/port ]] || fail "the server did not report its port"
base="http://127.0.0.1:$(cat "$work/port")"
echo "server at $base"

# request <name> <tenant or -> <path>: saves headers and body as $work/<name>.*,
# prints the status code.
request() {
    local name=$1 tenant=$2 path=$3 args=()
    [[ $tenant == - ]] || args=(-H "X-Tenant: $tenant")
    curl -sS --max-time 10 "${args[@]}" -D "$work/$name.headers" -o "$work/$name.body" \
        -w '%{http_code}' "$base$path"
}

expect_status() {  # <name> <expected> <actual>
    [[ $3 == "$2" ]] || fail "$1: expected HTTP $2, got $3 ($(cat "$work/$1.body" 2>/dev/null))"
    echo "ok: $1 -> $3"
}

expect_header() {  # <name> <header regex>
    grep -qiE "^$2" "$work/$1.headers" || fail "$1: no header matching '$2'"
}

metrics() {
    curl -sS --max-time 5 "$base/metrics"
}

wait_for_metric() {  # <exact metric line>
    for _ in $(seq 200); do
        metrics | grep -qxF "$1" && return 0
        sleep 0.02
    done
    fail "metric never became: $1"
}

# 1. A plain request is served and reports the limit.
expect_status plain 200 "$(request plain acme '/work?ms=1')"
expect_header plain 'X-Limit: 2'
expect_header plain 'X-Concurrency: 1'

# Tiers: paying tenants report their own limit.
expect_status gold 200 "$(request gold gold '/work?ms=1')"
expect_header gold 'X-Limit: 3'
expect_status vip 200 "$(request vip vip '/work?ms=1')"
expect_header vip 'X-Limit: 5'
expect_header vip 'X-Permit-Held: [0-9]+-[0-9]+'

# 2. Bad requests.
expect_status no_tenant 400 "$(request no_tenant - '/work')"
expect_status bad_tenant 400 "$(request bad_tenant 'a b' '/work')"
expect_status not_found 404 "$(request not_found acme '/nope')"

# 3. Fill the tenant: two holders, then one waiter, then one too many.
request hold1 busy '/work?ms=1500' >"$work/hold1.status" &
pids=($!)
request hold2 busy '/work?ms=1500' >"$work/hold2.status" &
pids+=($!)
wait_for_metric 'keysem_permits_in_use{tenant="busy"} 2'
request waiter busy '/work?ms=1' >"$work/waiter.status" &
pids+=($!)
wait_for_metric 'keysem_waiting{tenant="busy"} 1'
metrics | grep -qxF 'keysem_limit{tenant="busy"} 2' || fail "/metrics lacks busy's limit"

# The queue is full (1 waiter): shed at once.
expect_status shed 429 "$(request shed busy '/work?ms=1')"
expect_header shed 'Retry-After: 1'
# Another tenant is not affected by "busy" being full.
expect_status other_tenant 200 "$(request other_tenant calm '/work?ms=1')"

wait "${pids[@]}"
expect_status waiter 503 "$(cat "$work/waiter.status")"  # 1 s timeout < 1.5 s of work
expect_header waiter 'Retry-After: 1'
expect_status hold1 200 "$(cat "$work/hold1.status")"
expect_status hold2 200 "$(cat "$work/hold2.status")"

# 4. /metrics in the Prometheus text format, with the totals of the above.
curl -sS --max-time 5 -D "$work/metrics.headers" -o "$work/metrics.body" "$base/metrics"
expect_header metrics 'Content-Type: text/plain; version=0.0.4'
for line in \
    '# TYPE keysem_acquires_total counter' \
    'keysem_acquires_total{outcome="granted_immediately"} 6' \
    'keysem_acquires_total{outcome="granted_after_wait"} 0' \
    'keysem_acquires_total{outcome="rejected_queue_full"} 1' \
    'keysem_acquires_total{outcome="timed_out"} 1' \
    'keysem_acquires_total{outcome="rejected_closed"} 0' \
    'keysem_acquires_total{outcome="cancelled"} 0' \
    'keysem_live_keys 0' \
    'keysem_held_permits 0' \
    'keysem_waiting_acquires 0' \
    'keysem_permits_per_key 2' \
    'keysem_max_waiters_per_key 1'; do
    grep -qxF "$line" "$work/metrics.body" || fail "/metrics lacks '$line'"
done
echo "ok: /metrics"

# 5. Graceful shutdown: SIGTERM while a request holds a permit and another
# waits. The waiter is answered 503 at once (close()), the holder finishes.
request last_holder busy '/work?ms=800' >"$work/last_holder.status" &
pids=($!)
request last_holder2 busy '/work?ms=800' >"$work/last_holder2.status" &
pids+=($!)
wait_for_metric 'keysem_permits_in_use{tenant="busy"} 2'
request last_waiter busy '/work?ms=1' >"$work/last_waiter.status" &
pids+=($!)
wait_for_metric 'keysem_waiting{tenant="busy"} 1'
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[[ $status == 0 ]] || fail "the server exited with $status after SIGTERM"
wait "${pids[@]}"
expect_status last_waiter 503 "$(cat "$work/last_waiter.status")"
expect_status last_holder 200 "$(cat "$work/last_holder.status")"
expect_status last_holder2 200 "$(cat "$work/last_holder2.status")"
grep -q 'rejected_closed 1,' "$work/server.log" || fail "the shutdown summary does not count the closed waiter"
echo "ok: graceful shutdown"
cat "$work/server.log"
echo "PASS"
