#!/usr/bin/env bash
# Three replicas of the http_server example share per-tenant limits through
# one local redis-server (serve --redis, keysem::redis::fleet_semaphore);
# the load client spreads its users over all three, and one replica is
# killed with kill -9 mid-run.
#
# Usage: fleet_demo.sh <path to keysem_example_http_server> [--seconds S]
# (./scripts/demo fleet builds the example and runs this.)
#
# Shows, and exits 0 only if:
#  (a) per tenant, the highest concurrency across the fleet (overlapping
#      X-Permit-Held intervals of all replicas, one machine-wide monotonic
#      clock) never exceeded the tenant's limit;
#  (b) the leases the killed replica held in Redis were all gone within the
#      lease T + 1 s of the kill (they expire T after its last refresh);
#  (c) the surviving replicas shut down cleanly (SIGTERM).
# Exit status 77: redis-server or redis-cli is missing (skipped).
set -euo pipefail

server_bin=${1:?usage: $0 <keysem_example_http_server> [--seconds S]}
shift
seconds=6
if [[ ${1:-} == --seconds && -n ${2:-} ]]; then
    seconds=$2
elif (($# != 0)); then
    echo "usage: $0 <keysem_example_http_server> [--seconds S]" >&2
    exit 2
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 3)); then
    echo "--seconds: a whole number of seconds, at least 3 (the kill and the lease must fit)" >&2
    exit 2
fi
for tool in redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed (Debian: redis-server; ./scripts/demo installs it)"
        exit 77
    fi
done

lease_ms=1000                       # T, short for the demo
recovery_bound_ms=$((lease_ms + 1000))
kill_after=$((seconds / 3))         # s into the load; T + 1 s of load remain after it
prefix=keysem-http                  # fleet_config's default prefix
tiers="$(dirname "${BASH_SOURCE[0]}")/tiers.txt"
victim=2

work=$(mktemp -d)
cleanup() {
    # This script's own background processes that still run (redis-server,
    # replicas, the load client); nothing else.
    local pids
    pids=$(jobs -p)
    if [[ -n $pids ]]; then
        kill -9 $pids 2>/dev/null || true
        wait $pids 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

section() { printf '\n== %s\n' "$*"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# --- redis-server on a free port (redis 7.0 has no --port 0: try a few) ---
redis_port=
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --logfile '' \
        >"$work/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q 'Ready to accept connections' "$work/redis.log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if grep -q 'Ready to accept connections' "$work/redis.log" &&
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
        redis_port=$port
        break
    fi
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
if [[ -z $redis_port ]]; then
    cat "$work/redis.log" >&2
    echo "FAIL: redis-server did not start" >&2
    exit 1
fi
rcli() { redis-cli -p "$redis_port" "$@"; }

# Unexpired leases, one "tenant client-id member" line each. Members are
# "<client id>:<acquire>#<i>", scored by their expiry on Redis' clock.
leases_script="
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', k, '(' .. now, '+inf')) do
    out[#out + 1] = k .. ' ' .. m
  end
end
return out"
leases() {
    rcli EVAL "$leases_script" 0 "$prefix:{*}:h" |
        sed -n 's/^[^{]*{\([^}]*\)}:h \(\([^:]*\):.*\)$/\1 \3 \2/p'
}

section "redis-server on 127.0.0.1:$redis_port, three replicas (lease T = $lease_ms ms)"
declare -A replica_pid replica_port
for r in 1 2 3; do
    "$server_bin" serve --port 0 --port-file "$work/port$r" --limit 2 --tiers "$tiers" \
        --redis "127.0.0.1:$redis_port" --lease-ms "$lease_ms" >"$work/replica$r.log" 2>&1 &
    replica_pid[$r]=$!
done
for r in 1 2 3; do
    for _ in $(seq 200); do
        [[ -s $work/port$r ]] && break
        if ! kill -0 "${replica_pid[$r]}" 2>/dev/null; then
            cat "$work/replica$r.log" >&2
            echo "FAIL: replica $r exited before listening" >&2
            exit 1
        fi
        sleep 0.05
    done
    replica_port[$r]=$(cat "$work/port$r")
    printf 'replica %s: ' "$r"
    cat "$work/replica$r.log"
done
echo "limits stored in Redis: $(rcli --scan --pattern "$prefix:{*}:l" | while read -r k; do
    printf '%s=%s ' "$(sed 's/^[^{]*{\([^}]*\)}.*/\1/' <<<"$k")" "$(rcli GET "$k")"; done)(others: --limit 2)"

section "load for $seconds s over all three; replica $victim gets kill -9 after $kill_after s"
"$server_bin" load --port "${replica_port[1]},${replica_port[2]},${replica_port[3]}" \
    --seconds "$seconds" &
load_pid=$!

sleep "$kill_after"
# Kill while every replica holds leases, so the victim surely holds some.
for _ in $(seq 100); do
    (($(leases | awk '{print $2}' | sort -u | wc -l) == 3)) && break
    sleep 0.01
done
exec 3>&2 2>/dev/null  # not bash's "Killed" job notice
kill -9 "${replica_pid[$victim]}"
killed_at=$(now_ms)
leases >"$work/at_kill"
wait "${replica_pid[$victim]}" || true
exec 2>&3 3>&-

# A client id that adds a lease after the kill is alive; the victim's is
# the one that never does. Poll until its leases are all gone (expired).
: >"$work/alive"
dead_gone_ms=
while :; do
    t=$(now_ms)
    leases >"$work/now"
    awk 'FILENAME == ARGV[1] { at_kill[$3] = 1; next } !($3 in at_kill) { print $2 }' \
        "$work/at_kill" "$work/now" >>"$work/alive"
    remaining=$(awk 'FILENAME == ARGV[1] { alive[$1] = 1; next }
                     FILENAME == ARGV[2] { now[$3] = 1; next }
                     !($2 in alive) && ($3 in now) { n++ }
                     END { print n + 0 }' "$work/alive" "$work/now" "$work/at_kill")
    if ((remaining == 0 && $(sort -u "$work/alive" | wc -l) >= 2)); then
        dead_gone_ms=$((t - killed_at))
        break
    fi
    ((t - killed_at > lease_ms + 3000)) && break
    sleep 0.005
done

# The victim's leases at the kill, per tenant.
dead_by_tenant=$(awk 'FILENAME == ARGV[1] { alive[$1] = 1; next }
                      !($2 in alive) { n[$1]++ }
                      END { for (t in n) print t, n[t] }' "$work/alive" "$work/at_kill" | sort)
dead_leases=$(awk '{ s += $2 } END { print s + 0 }' <<<"$dead_by_tenant")
echo "replica $victim killed; it held $dead_leases lease(s) in Redis:" \
    "$(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' <<<"$dead_by_tenant")"

load_status=0
wait "$load_pid" || load_status=$?

section "recovery of the killed replica's permits"
recovery_status=0
if [[ -z $dead_gone_ms ]]; then
    echo "FAIL: the killed replica's leases were still in Redis $((lease_ms + 3000)) ms after the kill"
    recovery_status=1
elif ((dead_leases == 0)); then
    echo "FAIL: the killed replica held no lease at the kill: nothing to recover"
    recovery_status=1
else
    printf 'its %d lease(s) expired in Redis %d ms after kill -9 (T = %d ms; bound T + 1 s = %d ms)\n' \
        "$dead_leases" "$dead_gone_ms" "$lease_ms" "$recovery_bound_ms"
    ((dead_gone_ms <= recovery_bound_ms)) || recovery_status=1
fi

section "graceful shutdown of the surviving replicas (SIGTERM)"
shutdown_status=0
for r in 1 3; do
    kill -TERM "${replica_pid[$r]}"
    status=0
    wait "${replica_pid[$r]}" || status=$?
    echo "replica $r: $(tail -n 1 "$work/replica$r.log") (exit $status)"
    ((status == 0)) || shutdown_status=1
done
echo "leases left in Redis: $(leases | wc -l)"

cat <<EOF

How to read this: each replica runs the one-process demo's policy (free
tenants 2, acme 8, 100 ms to get a permit or 503), but a permit is now a
lease in Redis (keysem::redis::fleet_semaphore), so the limits hold for the
three replicas together: "max/limit" is the most requests the client saw
holding a permit at once, across all replicas. When a replica dies, its leases
stay in Redis until they expire, T after its last refresh; until then the
survivors cannot use those permits, and afterwards they hold each tenant's
full limit again. See docs/fleet.md for what is guaranteed and what is not.
EOF

if ((load_status != 0 || recovery_status != 0 || shutdown_status != 0)); then
    echo "fleet demo FAILED (limits/load: $load_status, recovery: $recovery_status," \
        "shutdown: $shutdown_status)" >&2
    exit 1
fi
echo "every tenant stayed within its limit across the fleet, and the killed replica's permits came back"
