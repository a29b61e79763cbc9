#!/usr/bin/env python3
"""Turns the Google Benchmark JSON of keysem's benchmark programs into
docs/benchmarks.md and the data file behind docs/benchmarks.png.

Usage: report.py --meta meta.json --out docs/benchmarks.md --chart-data docs/bench-chart.dat
                 [--analysis benchmarks/tools/analysis.md] results1.json [results2.json ...]
       report.py --fleet-only --meta meta.json --out docs/benchmarks.md fleet.json
                 (replaces only the "Fleet (Redis)" section of an existing document)

Only the standard library: it runs wherever scripts/bench runs.
"""

import argparse
import json
import math
import re
import sys

IMPLS = ("keysem", "mutex", "channel")


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------
class Results:
    """Aggregates (median/min/max/...) per (name, impl, threads)."""

    def __init__(self):
        self.rows = {}
        self.contexts = []

    def load(self, path):
        with open(path) as f:
            data = json.load(f)
        self.contexts.append(data.get("context", {}))
        for b in data.get("benchmarks", []):
            if b.get("run_type") != "aggregate":
                continue
            if b.get("error_occurred"):
                continue
            key = parse_run_name(b["run_name"])
            self.rows.setdefault(key, {})[b["aggregate_name"]] = b

    def get(self, name, impl, threads=None, agg="median", field="ns_per_op"):
        row = self.rows.get((name, impl, threads), {}).get(agg)
        if row is None or field not in row:
            return None
        value = row[field]
        if field == "ns_per_op":
            value *= 1e9  # the counter is in seconds per op
        return value

    def errors(self, paths):
        out = []
        for path in paths:
            with open(path) as f:
                for b in json.load(f).get("benchmarks", []):
                    if b.get("error_occurred"):
                        out.append(f"{b['name']}: {b.get('error_message', '?')}")
        return sorted(set(out))


def parse_run_name(run_name):
    parts = run_name.split("/")
    name, impl = parts[0], parts[1]
    threads = None
    for p in parts[2:]:
        m = re.fullmatch(r"threads:(\d+)", p)
        if m:
            threads = int(m.group(1))
    return (name, impl, threads)


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------
def fmt_ns(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e4:
        return f"{v / 1e3:.1f} µs"
    if v >= 1e3:
        return f"{v / 1e3:.2f} µs"
    if v >= 100:
        return f"{v:.0f} ns"
    return f"{v:.1f} ns"


def fmt_range(res, name, impl, threads=None, field="ns_per_op", fmt=fmt_ns):
    med = res.get(name, impl, threads, "median", field)
    if med is None:
        return "—"
    lo = res.get(name, impl, threads, "min", field)
    hi = res.get(name, impl, threads, "max", field)
    if lo is None or hi is None:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------
TIME_ROWS = [
    # (section, benchmark name, threads, label)
    ("W1", "W1.try_release", None, "try_acquire + release, existing key, `const std::string&`"),
    ("W1", "W1.try_release_by_view", None, "the same, looked up by `std::string_view`"),
    ("W1b", "W1b.fresh_key", None, "try_acquire + release, key created and reclaimed each time"),
    ("W1b", "W1b.fresh_key_by_view", None, "the same, by `std::string_view`"),
    ("W2", "W2.acquire_no_token", None,
     "`co_await sem.acquire(key)` + release (keysem: its own awaitable; baselines: deferred)"),
    ("W2", "W2.acquire_deferred", None, "`co_await sem.acquire(key, deferred)` + release"),
    ("W2", "W2.acquire_use_awaitable", None, "`co_await sem.acquire(key, use_awaitable)` + release"),
    ("W3", "W3.handoff", None, "hand-off: 8 coroutines, one key, limit 1, one thread"),
    ("W4", "W4.co_await", 1, "own key per task, `co_await acquire`, thread_pool(1)"),
    ("W4", "W4.co_await", 2, "own key per task, `co_await acquire`, thread_pool(2)"),
    ("W4", "W4.try", 1, "own key per task, try_acquire + release, thread_pool(1)"),
    ("W4", "W4.try", 2, "own key per task, try_acquire + release, thread_pool(2)"),
    ("W5", "W5.contended", None, "hand-off: 8 tasks, one key, limit 1, thread_pool(2)"),
    ("W6", "W6.cycle_idle_keys", None, "try_acquire + release cycling over 1M keys (each created and reclaimed)"),
    ("W6", "W6.cycle_live_keys", None, "the same while all 1M keys are held (1M-key table)"),
    ("W6", "W6.hold_all", None, "acquire 1M keys and hold them, then release all (per key)"),
    ("W6", "W6.waiters", None, "100k acquires queued on one key, then granted in turn (per waiter)"),
    ("W7", "W7.server_mix", None, "server mix: 10k Zipf tenants, limit 4, 5% abandoned; per request"),
]

CHART_ROWS = [
    ("W1", "W1.try_release", None),
    ("W1 sv", "W1.try_release_by_view", None),
    ("W1b", "W1b.fresh_key", None),
    ("W1b sv", "W1b.fresh_key_by_view", None),
    ("W2", "W2.acquire_no_token", None),
    ("W2 def", "W2.acquire_deferred", None),
    ("W2 aw", "W2.acquire_use_awaitable", None),
    ("W3", "W3.handoff", None),
    ("W4 co 2t", "W4.co_await", 2),
    ("W4 try 2t", "W4.try", 2),
    ("W5", "W5.contended", None),
    ("W6 idle", "W6.cycle_idle_keys", None),
    ("W6 live", "W6.cycle_live_keys", None),
    ("W6 hold", "W6.hold_all", None),
    ("W6 wait", "W6.waiters", None),
    ("W7", "W7.server_mix", None),
]


def time_table(res):
    header = ["workload", "what", "keysem", "mutex baseline", "channel baseline",
              "keysem / mutex", "keysem / channel"]
    rows = []
    for section, name, threads, label in TIME_ROWS:
        k = res.get(name, "keysem", threads)
        m = res.get(name, "mutex", threads)
        c = res.get(name, "channel", threads)
        rows.append([section, label,
                     fmt_range(res, name, "keysem", threads),
                     fmt_range(res, name, "mutex", threads),
                     fmt_range(res, name, "channel", threads),
                     fmt_ratio(ratio(k, m)), fmt_ratio(ratio(k, c))])
    return table(header, rows)


def post_table(res):
    rows = []
    for token in ("deferred", "use_awaitable"):
        rows.append([f"`co_await asio::post({token})`",
                     fmt_range(res, "W2.post_round_trip", token)])
    return table(["reference (W2)", "time per round trip"], rows)


def scaling_table(res):
    header = ["W4 path", "implementation", "1 thread (ops/s)", "2 threads (ops/s)", "2 threads / 1 thread"]
    rows = []
    for path in ("W4.co_await", "W4.try"):
        for impl in IMPLS:
            t1 = res.get(path, impl, 1)
            t2 = res.get(path, impl, 2)
            rows.append([path, impl, fmt_rate(t1), fmt_rate(t2), fmt_ratio(ratio(t1, t2))])
    t1, t2 = res.get("W4.control", "cpu_only", 1), res.get("W4.control", "cpu_only", 2)
    rows.append(["control", "pure arithmetic, nothing shared", fmt_rate(t1), fmt_rate(t2), fmt_ratio(ratio(t1, t2))])
    return table(header, rows)


def handoff_table(res):
    header = ["hand-offs per second", "keysem", "mutex baseline", "channel baseline"]
    rows = []
    for label, name in (("W3: 8 coroutines, one key, limit 1, one thread", "W3.handoff"),
                        ("W5: 8 tasks, one key, limit 1, thread_pool(2)", "W5.contended")):
        rows.append([label] + [fmt_rate(res.get(name, impl)) for impl in IMPLS])
    return table(header, rows)


def cpu_table(res):
    header = ["workload", "keysem", "mutex baseline", "channel baseline", "keysem / mutex"]
    rows = []
    for label, name, threads in (("W4 co_await, thread_pool(1)", "W4.co_await", 1),
                                 ("W4 co_await, thread_pool(2)", "W4.co_await", 2),
                                 ("W4 try, thread_pool(1)", "W4.try", 1),
                                 ("W4 try, thread_pool(2)", "W4.try", 2),
                                 ("W5 contended hand-off", "W5.contended", None),
                                 ("W7 server mix (per request)", "W7.server_mix", None)):
        vals = [res.get(name, impl, threads, "median", "cpu_ns_per_op") for impl in IMPLS]
        rows.append([label] + [fmt_ns(v) for v in vals] + [fmt_ratio(ratio(vals[0], vals[1]))])
    return table(header, rows)


def fmt_rate(ns):
    if ns is None:
        return "—"
    rate = 1e9 / ns
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M"
    return f"{rate / 1e3:.0f} k"


def fmt_bytes(v):
    return "—" if v is None else f"{v:.1f} B"


def memory_table(res):
    header = ["W6 memory", "keysem", "mutex baseline", "channel baseline"]
    rows = []
    for label, name, field in (
        ("heap bytes per held key (1M keys held)", "W6.hold_all", "bytes_per_held_key"),
        ("heap bytes still in use per key after all 1M were released", "W6.hold_all", "bytes_retained_per_key"),
        ("heap bytes per queued waiter (100k waiters)", "W6.waiters", "bytes_per_waiter"),
        ("sizeof(permit)", "W6.hold_all", "sizeof_permit"),
    ):
        rows.append([label] + [fmt_bytes(res.get(name, impl, None, "median", field)) for impl in IMPLS])
    return table(header, rows)


def allocation_table(res):
    header = ["heap allocations per operation", "keysem", "mutex baseline", "channel baseline"]
    rows = []
    for label, name in (
        ("W1 try_acquire + release (string)", "W1.try_release"),
        ("W1 try_acquire + release (string_view)", "W1.try_release_by_view"),
        ("W1b fresh key (string)", "W1b.fresh_key"),
        ("W1b fresh key (string_view)", "W1b.fresh_key_by_view"),
        ("W2 co_await acquire, no token", "W2.acquire_no_token"),
        ("W2 co_await acquire, deferred", "W2.acquire_deferred"),
        ("W2 co_await acquire, use_awaitable", "W2.acquire_use_awaitable"),
    ):
        rows.append([label] + [fmt_allocs(res.get(name, impl, None, "median", "allocs_per_op")) for impl in IMPLS])
    return table(header, rows)


def fmt_allocs(v):
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if v < 0.001:
        return f"{v:.1e}"
    return f"{v:.3g}"


# keysem_deferred: keysem awaited with asio::deferred, the baselines' default
# (every acquire takes an event-loop turn), for latency at the baselines' pace.
W7_IMPLS = ("keysem", "keysem_deferred", "mutex", "channel")


def w7_table(res):
    header = ["W7 server mix", "keysem", "keysem, `deferred`", "mutex baseline", "channel baseline"]
    rows = [["requests per second"] + [fmt_rate(res.get("W7.server_mix", i)) for i in W7_IMPLS],
            ["p50 acquire → grant"] + [fmt_ns(res.get("W7.server_mix", i, None, "median", "p50_ns")) for i in W7_IMPLS],
            ["p99 acquire → grant"] + [fmt_ns(res.get("W7.server_mix", i, None, "median", "p99_ns")) for i in W7_IMPLS],
            ["p99, the 3 hottest tenants (~19% of requests)"] +
            [fmt_ns(res.get("W7.server_mix", i, None, "median", "hot_p99_ns")) for i in W7_IMPLS],
            ["p99, the other tenants"] +
            [fmt_ns(res.get("W7.server_mix", i, None, "median", "cold_p99_ns")) for i in W7_IMPLS],
            ["CPU time per request (both threads)"] +
            [fmt_ns(res.get("W7.server_mix", i, None, "median", "cpu_ns_per_op")) for i in W7_IMPLS],
            ["acquires abandoned by timeout"] +
            [("—" if (v := res.get("W7.server_mix", i, None, "median", "abandoned_pct")) is None else f"{v:.1f} %")
             for i in W7_IMPLS]]
    return table(header, rows)


# --------------------------------------------------------------------------
# Unkeyed semaphore (benchmarks/unkeyed.cpp)
# --------------------------------------------------------------------------
UNKEYED_IMPLS = ("async_semaphore", "keyed_one_key", "mutex", "channel")
UNKEYED_ROWS = [
    ("U1", "U1.try_release", "try_acquire + release"),
    ("U2", "U2.acquire_no_token", "`co_await sem.acquire()` + release, permits free (no token)"),
    ("U2 def", "U2.acquire_deferred", "`co_await sem.acquire(deferred)` + release, permits free"),
    ("U3", "U3.handoff", "hand-off: 8 coroutines, 1 permit, one thread (per hand-off)"),
]


def unkeyed_table(res):
    rows = []
    for section, name, label in UNKEYED_ROWS:
        vals = [res.get(name, impl) for impl in UNKEYED_IMPLS]
        rows.append([section, label] + [fmt_range(res, name, impl) for impl in UNKEYED_IMPLS]
                    + [fmt_ratio(ratio(vals[0], vals[1])), fmt_ratio(ratio(vals[0], vals[2])),
                       fmt_ratio(ratio(vals[0], vals[3]))])
    return table(["", "workload", "async_semaphore", "keyed, one key", "mutex", "channel",
                  "async / keyed", "async / mutex", "async / channel"], rows)


def unkeyed_targets(res):
    out = []
    g = res.get
    for name, bound, label in (("U1.try_release", 0.6, "U1 try_acquire + release"),
                               ("U2.acquire_no_token", 0.8, "U2 immediate `co_await sem.acquire()`"),
                               ("U3.handoff", 1.0, "U3 hand-off")):
        a, k = g(name, "async_semaphore"), g(name, "keyed_one_key")
        r = ratio(a, k)
        target = f"{label}: async_semaphore ≤ {bound}× the keyed semaphore on one key"
        if r is None:
            out.append([target, "not measured", "?"])
        else:
            out.append([target, f"{fmt_ratio(r)} ({fmt_ns(a)} vs {fmt_ns(k)})",
                        "met" if r <= bound else "**not met**"])
    return out


# --------------------------------------------------------------------------
# Fleet (benchmarks/fleet.cpp): keysem::redis against a redis-server
# --------------------------------------------------------------------------
F1 = ("F1.round_trips", "one_connection")
F2 = ("F2.release_to_waiter", "other_process")
F3_ROWS = [
    ("stage_1x64", "1 fleet_semaphore × 64 coroutines (one process, local stage)"),
    ("stage_4x16", "4 fleet_semaphores × 16 coroutines (four processes, each with its stage)"),
    ("no_stage_64x1", "64 fleet_semaphores × 1 coroutine (no stage: every waiter is a Redis client)"),
]
FLEET_HEADER = "## Fleet (Redis)"


def fmt_num(v):
    if v is None:
        return "—"
    if v >= 1e4:
        return f"{v / 1e3:.1f} k"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_us(v):
    return "—" if v is None else fmt_ns(v * 1e3)


def fmt_fleet(res, bench, field, fmt):
    name, impl = bench
    return fmt_range(res, name, impl, None, field, fmt)


def fleet_repetitions(res):
    for (name, _, _), aggs in res.rows.items():
        if name.startswith("F") and "median" in aggs:
            return aggs["median"].get("repetitions")
    return None


def has_fleet(res):
    return res.get(*F1, None, "median", "pipelined_per_s") is not None or \
        res.get(*F2, None, "median", "pubsub_p50_us") is not None


def fleet_section(res, meta):
    g = res.get
    reps = fleet_repetitions(res)
    doc = [FLEET_HEADER + "\n"]
    doc.append("`keysem::redis::fleet_semaphore` (docs/fleet.md) against a `redis-server` "
               f"({meta.get('redis', 'version unknown')}) that `benchmarks/fleet.cpp` starts on 127.0.0.1, "
               "on a free port, without persistence; default `fleet_options` (lease 10 s) and a prefix "
               "of its own per batch. Client and server share the machine's CPUs. Each repetition runs "
               f"one batch of each workload; the figures are the **median over {reps or '?'} repetitions** "
               "(min–max), and each baseline is measured in the same batch as keysem.\n")
    doc.append("### F1: acquire + release pairs per second on one connection\n")
    doc.append("One `fleet_semaphore`, so one command connection. **Pipelined**: 64 coroutines, each "
               "looping `co_await acquire(own key)` + release, 20,000 pairs in all (at the default scale); up to 64 requests are "
               "in flight and written together. **One at a time** (baseline): one coroutine, 4,000 "
               "pairs; each acquire is sent when the previous one's reply is in (the release, which is "
               "fire-and-forget, goes out with the next acquire). Both are timed until the reply to the "
               "last release is in. Redis' time is `usec` of EVALSHA in `INFO commandstats`; the "
               "client's is the CPU time of the benchmark process.\n")
    rows = [["acquire + release pairs per second",
             fmt_fleet(res, F1, "pipelined_per_s", fmt_num), fmt_fleet(res, F1, "one_at_a_time_per_s", fmt_num),
             fmt_fleet(res, F1, "ratio", fmt_ratio)],
            ["Redis' time running the scripts, per pair",
             fmt_fleet(res, F1, "redis_us_per_pair", fmt_us), fmt_fleet(res, F1, "serial_redis_us_per_pair", fmt_us),
             ""],
            ["client CPU time per pair",
             fmt_fleet(res, F1, "client_us_per_pair", fmt_us), fmt_fleet(res, F1, "serial_client_us_per_pair", fmt_us),
             ""]]
    doc.append(table(["F1", "pipelined (64 coroutines)", "one at a time (baseline)", "pipelined / one at a time"],
                     rows))
    doc.append("")
    doc.append("### F2: release → waiter granted in another process\n")
    doc.append("The benchmark forks a waiter process. Per sample, the parent acquires a key (limit 1) and "
               "tells the child to acquire it; after a random 2–12 ms the parent reads `CLOCK_MONOTONIC` "
               "(shared by all processes of the machine) and releases; the child reads it when its acquire "
               "completes. Samples alternate between the child's two waiters: **pub/sub** — "
               "`fleet_semaphore::acquire`, woken by the release message; **10 ms polling** (baseline) — "
               "`try_acquire` retried every 10 ms until granted, the retry loop of redis-semaphore with "
               "its default interval. A sample whose waiter never found the key busy measures no wake-up "
               "and is dropped (counted below).\n")
    rows = [["pub/sub (keysem)", fmt_fleet(res, F2, "pubsub_p50_us", fmt_us),
             fmt_fleet(res, F2, "pubsub_p99_us", fmt_us)],
            ["10 ms polling (baseline)", fmt_fleet(res, F2, "polling_p50_us", fmt_us),
             fmt_fleet(res, F2, "polling_p99_us", fmt_us)],
            ["polling / pub/sub", fmt_fleet(res, F2, "p50_ratio", fmt_ratio),
             fmt_ratio(ratio(g(*F2, None, "median", "polling_p99_us"), g(*F2, None, "median", "pubsub_p99_us")))]]
    doc.append(table(["F2 waiter", "median", "p99"], rows))
    samples, dropped = g(*F2, None, "median", "samples"), g(*F2, None, "median", "dropped")
    if samples is not None:
        doc.append(f"\nSamples per repetition: {samples:.0f} kept (half per waiter), "
                   f"{0 if dropped is None else dropped:.0f} dropped (median).\n")
    doc.append("### F3: Redis commands per granted permit under load\n")
    doc.append("64 coroutines loop on 2 hot keys with a limit of 2: acquire, hold 1 ms, release, for 1 s "
               "(an acquire already waiting then still completes and counts). The coroutines are spread "
               "over 1, 4 or 64 `fleet_semaphore`s, each with its own connections, like as many processes. "
               "The baseline **without the local stage** is 64 semaphores × 1 coroutine: fleet_options "
               "has no switch to bypass the stage, and a stage in front of a single request does nothing, "
               "so every waiter talks to Redis itself. Commands are counted by Redis (`INFO "
               "commandstats` before and after, on a connection of its own): *sent* are those the "
               "clients sent (EVALSHA, SUBSCRIBE, UNSUBSCRIBE, ...); *all* adds those the scripts ran "
               "(TIME, ZADD, PUBLISH, ...).\n")
    rows = []
    for impl, label in F3_ROWS:
        b = ("F3.commands_per_permit", impl)
        rows.append([label] + [fmt_fleet(res, b, f, fmt_num) for f in
                               ("sent_per_permit", "evalsha_per_permit", "sub_unsub_per_permit",
                                "publish_per_permit", "all_per_permit", "permits_per_s")])
    doc.append(table(["F3", "sent per permit", "EVALSHA", "SUBSCRIBE + UNSUBSCRIBE", "PUBLISH",
                      "all, incl. inside scripts", "permits per second"], rows))
    staged = g("F3.commands_per_permit", "stage_1x64", None, "median", "sent_per_permit")
    bare = g("F3.commands_per_permit", "no_stage_64x1", None, "median", "sent_per_permit")
    r = ratio(bare, staged)
    if r is not None:
        doc.append(f"\nWithout the stage, {fmt_ratio(r)} the commands per permit of one process with it.\n")
    if meta.get("fleet_date"):
        doc.append(f"Run: {meta['fleet_date']}, commit `{meta.get('commit', '?')}`, load average before / after "
                   f"{meta.get('load_before', '?')} / {meta.get('load_after', '?')}.\n")
    return "\n".join(doc)


def splice_section(path, section, header=FLEET_HEADER, before="## Chart"):
    """Replaces `header`'s section of an existing document (up to the next
    level-2 header), or inserts it before `before`."""
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() == header), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = next((i for i, l in enumerate(lines) if l.strip() == before), len(lines))
    lines[start:end] = section.rstrip("\n").split("\n") + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------
def targets(res):
    """Rows of (target, measured, met) from issue 4."""
    out = []

    def add(target, value, ok, detail=""):
        if value is None:
            out.append([target, "not measured", "?"])
        else:
            out.append([target, value + (f" ({detail})" if detail else ""), "met" if ok else "**not met**"])

    g = res.get
    for name, label in (("W1.try_release", "W1"), ("W1.try_release_by_view", "W1 by string_view"),
                        ("W1b.fresh_key", "W1b"), ("W1b.fresh_key_by_view", "W1b by string_view")):
        r = ratio(g(name, "keysem"), g(name, "mutex"))
        add(f"{label}: keysem ≤ 0.8× mutex time per pair", None if r is None else fmt_ratio(r), r is not None and r <= 0.8,
            f"{fmt_ns(g(name, 'keysem'))} vs {fmt_ns(g(name, 'mutex'))}")
    for name, label in (("W1.try_release", "string"), ("W1.try_release_by_view", "string_view")):
        a = g(name, "keysem", None, "median", "allocs_per_op")
        add(f"W1 ({label}): 0 heap allocations per pair", None if a is None else fmt_allocs(a), a == 0)
    k, m = g("W2.acquire_no_token", "keysem"), g("W2.acquire_no_token", "mutex")
    r = ratio(k, m)
    add("W2 (no token, as users write it): keysem ≤ 1.0× mutex", None if r is None else fmt_ratio(r),
        r is not None and r <= 1.0, f"{fmt_ns(k)} vs {fmt_ns(m)}")
    add("W2: plain `co_await sem.acquire(key)` ≤ 65 ns", None if k is None else fmt_ns(k), k is not None and k <= 65)
    for name, post, label in (("W2.acquire_no_token", "deferred", "no token"),
                              ("W2.acquire_deferred", "deferred", "deferred"),
                              ("W2.acquire_use_awaitable", "use_awaitable", "use_awaitable")):
        k, m = g(name, "keysem"), g(name, "mutex")
        if name != "W2.acquire_no_token":
            r = ratio(k, m)
            add(f"W2 ({label}): keysem ≤ 1.0× mutex, same token", None if r is None else fmt_ratio(r),
                r is not None and r <= 1.0, f"{fmt_ns(k)} vs {fmt_ns(m)}")
        floor = None
        p, w1 = g("W2.post_round_trip", post), g("W1.try_release", "keysem")
        if p is not None and w1 is not None:
            floor = p + w1
        r2 = ratio(k, floor)
        add(f"W2 ({label}): keysem ≤ 1.3× (post({post}) round trip + W1)", None if r2 is None else fmt_ratio(r2),
            r2 is not None and r2 <= 1.3, f"{fmt_ns(k)} vs {fmt_ns(p)} + {fmt_ns(w1)}")
    for path in ("W4.co_await", "W4.try"):
        t1, t2, m2 = g(path, "keysem", 1), g(path, "keysem", 2), g(path, "mutex", 2)
        s = ratio(t1, t2)
        c = ratio(g("W4.control", "cpu_only", 1), g("W4.control", "cpu_only", 2))
        add(f"{path}: 2 threads ≥ 1.7× 1 thread (keysem)", None if s is None else fmt_ratio(s), s is not None and s >= 1.7,
            "the machine's own scaling in this run (control): " + fmt_ratio(c))
        r = ratio(m2, t2)
        add(f"{path}: keysem ≥ 1.2× mutex throughput at 2 threads", None if r is None else fmt_ratio(r),
            r is not None and r >= 1.2)
    for name in ("W6.cycle_idle_keys", "W6.cycle_live_keys", "W6.hold_all"):
        r = ratio(g(name, "keysem"), g(name, "mutex"))
        add(f"{name}: keysem ≤ 1.0× mutex time", None if r is None else fmt_ratio(r), r is not None and r <= 1.0,
            f"{fmt_ns(g(name, 'keysem'))} vs {fmt_ns(g(name, 'mutex'))}")
    b = g("W6.hold_all", "keysem", None, "median", "bytes_per_held_key")
    add("W6: ≤ 128 bytes per held key (keys own no heap storage here)", None if b is None else fmt_bytes(b),
        b is not None and b <= 128)
    b = g("W6.hold_all", "keysem", None, "median", "bytes_retained_per_key")
    add("W6: 0 bytes retained per idle key after reclamation", None if b is None else fmt_bytes(b),
        b is not None and b <= 0.5)
    k, m = g("W7.server_mix", "keysem"), g("W7.server_mix", "mutex")
    r = ratio(m, k)
    add("W7: throughput ≥ 1.2× mutex", None if r is None else fmt_ratio(r), r is not None and r >= 1.2)
    kp = g("W7.server_mix", "keysem", None, "median", "p99_ns")
    mp = g("W7.server_mix", "mutex", None, "median", "p99_ns")
    r = ratio(kp, mp)
    add("W7: p99 no worse than mutex", None if r is None else fmt_ratio(r), r is not None and r <= 1.0,
        f"{fmt_ns(kp)} vs {fmt_ns(mp)}")
    dp = g("W7.server_mix", "keysem_deferred", None, "median", "p99_ns")
    r = ratio(dp, mp)
    add("W7: p99 no worse than mutex, keysem awaited with `deferred` as the baselines are",
        None if r is None else fmt_ratio(r), r is not None and r <= 1.0, f"{fmt_ns(dp)} vs {fmt_ns(mp)}")
    return out


# --------------------------------------------------------------------------
# Chart data
# --------------------------------------------------------------------------
def chart_data(res):
    lines = ["# label keysem mutex channel  (time per operation relative to the mutex baseline; median)"]
    for label, name, threads in CHART_ROWS:
        m = res.get(name, "mutex", threads)
        vals = []
        for impl in IMPLS:
            v = res.get(name, impl, threads)
            vals.append("NaN" if v is None or m is None else f"{v / m:.4f}")
        lines.append(f'"{label}" ' + " ".join(vals))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Document
# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chart-data", help="required unless --fleet-only")
    ap.add_argument("--analysis")
    ap.add_argument("--fleet-only", action="store_true",
                    help="replace only the Fleet (Redis) section of --out with the results given")
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()

    with open(args.meta) as f:
        meta = json.load(f)
    res = Results()
    for path in args.results:
        res.load(path)
    errors = res.errors(args.results)

    if args.fleet_only:
        if errors:
            print("benchmarks that failed:\n" + "\n".join(errors), file=sys.stderr)
            return 1
        splice_section(args.out, fleet_section(res, meta))
        return 0
    if not args.chart_data:
        ap.error("--chart-data is required")

    with open(args.chart_data, "w") as f:
        f.write(chart_data(res))

    ctx = res.contexts[0] if res.contexts else {}
    doc = []
    doc.append("# keysem benchmarks\n")
    doc.append("Generated by `./scripts/bench`; do not edit by hand (the last section comes from "
               "`benchmarks/tools/analysis.md`). Every number is the **median over "
               f"{meta['repetitions']} repetitions** with the min–max range in parentheses; ratios are "
               "of medians measured in the same run. Lower times are better.\n")
    doc.append("## Machine and run\n")
    doc.append(table(["", ""], [
        ["date", meta["date"]],
        ["commit", f"`{meta['commit']}`"],
        ["CPU", f"{meta['cpu']} — {meta['nproc']} logical CPUs (nproc)"],
        ["kernel", meta["kernel"]],
        ["compiler", meta["compiler"]],
        ["Boost / Google Benchmark", f"{meta['boost']} / {meta['gbench']}"],
        ["build", "CMake preset `bench`: Release, `-O2 -DNDEBUG`"],
        ["load average before / after", f"{meta['load_before']} / {meta['load_after']}"],
    ]))
    doc.append("\nCommand: `./scripts/bench`, which ran\n")
    doc.append("```sh\n" + "\n".join(meta["commands"]) + "\n```\n")
    doc.append("Single-threaded workloads (W1, W1b, W2, W3, W6) are timed by the benchmark thread's CPU "
               "time — all their work runs on that thread, and it is robust against other processes on a "
               "shared machine; multi-threaded ones (W4, W5, W7) by the wall clock. Each program starts a "
               "parked thread first, so glibc's mutex takes its multi-threaded path, as in a server. "
               "Keys are 14-character tenant ids (`tenant-0000042`), inside `std::string`'s small buffer.\n")
    if errors:
        doc.append("**Benchmarks that failed in this run:**\n")
        doc += [f"- {e}" for e in errors]
        doc.append("")

    doc.append("## The contenders\n")
    doc.append("- **keysem** — `keysem::keyed_semaphore` (`async_keyed_semaphore<std::string>`), default options.\n"
               "- **mutex baseline** — `benchmarks/baselines/mutex_keyed_semaphore.hpp`: shards (as many as keysem's "
               "default) of `std::mutex` + `boost::unordered_flat_map<std::string, {count, FIFO of waiters}>` "
               "hashed once with `keysem::hash` (XXH3, avalanching, prehashed probes); entries erased when idle; "
               "completions posted to the handler's executor; waiting ops from the handler's allocator or asio's "
               "recycling allocator; per-op cancellation. The permit carries its key (the map is not node-stable).\n"
               "- **channel baseline** — `benchmarks/baselines/channel_semaphore.hpp`: per key an "
               "`asio::experimental::concurrent_channel<void(error_code)>` of capacity N (acquire = `async_send`, "
               "release = `try_receive`) in one `std::mutex`-guarded `unordered_flat_map`, entries counted "
               "and erased when unused.\n")

    doc.append("## Targets (issue 4)\n")
    doc.append(table(["target", "measured (keysem)", "verdict"], targets(res)))
    doc.append("")

    doc.append("## Time per operation\n")
    doc.append(time_table(res))
    doc.append("")
    doc.append(post_table(res))
    doc.append("")
    doc.append("## Contended hand-off throughput (W3, W5)\n")
    doc.append(handoff_table(res))
    doc.append("")
    doc.append("## Multi-threaded workloads: CPU time per operation\n")
    doc.append("CPU time of the whole process (all threads) per operation, median. Unlike wall time it does "
               "not grow when other processes take the CPUs, so it compares efficiency even on a busy machine; "
               "the targets use wall time.\n")
    doc.append(cpu_table(res))
    doc.append("")
    doc.append("## W4: scaling from one thread to two\n")
    doc.append(scaling_table(res))
    doc.append("")
    doc.append("## Allocations\n")
    doc.append("Counted by the benchmark program's global `operator new` and `aligned_alloc` "
               "(asio's recycling allocator on a cache miss), on the measuring thread, "
               "after a warm-up operation.\n")
    doc.append(allocation_table(res))
    doc.append("")
    doc.append("## W6: memory\n")
    doc.append("From glibc's `mallinfo2()` (arena bytes in use + mmapped blocks). The keys fit the small "
               "buffer of `std::string`, so every byte counted belongs to the semaphore. \"Still in use after "
               "release\" is what the tables keep as capacity once the million keys are idle again.\n")
    doc.append(memory_table(res))
    doc.append("")
    doc.append("## W7: server-like mix\n")
    doc.append("32 request coroutines, each on its own strand of a `thread_pool(2)`; 10,000 tenants with Zipf "
               "(s = 1) popularity, 4 permits per tenant; a granted request holds its permit for two event-loop "
               "turns. 32 requests in flight keep the hottest tenants near their limit (some requests wait); with "
               "64, the top tenant is over capacity, the closed loop queues most coroutines behind it and the run "
               "measures that one queue whatever the semaphore. Every 20th request goes to a tenant whose 4 permits are held throughout and races a 50 µs "
               "timer (`acquire || timer` with awaitable operators): the timer wins and the acquire is cancelled, "
               "so exactly 5% of acquires are abandoned by a timeout. Latency is from calling `acquire` to "
               "holding the permit, over granted requests. keysem runs twice: with `co_await sem.acquire(key)` "
               "(free permits are taken without suspending) and with `co_await sem.acquire(key, deferred)`, the "
               "baselines' default, whose completion is always posted. The loop is closed: a request that does not "
               "suspend lets its coroutine send the next one sooner, so without a token the hottest tenants get "
               "their requests faster and queue longer; the `deferred` column compares latency at the baselines' "
               "pace.\n")
    doc.append(w7_table(res))
    doc.append("")
    if any(res.get(name, "async_semaphore") is not None for _, name, _ in UNKEYED_ROWS):
        doc.append("## Unkeyed semaphore (U1–U3)\n")
        doc.append("`keysem::async_semaphore` against keysem's keyed semaphore used on one key (W1/W2/W3's "
                   "shape), `benchmarks/baselines/mutex_semaphore.hpp` (`std::mutex` + an intrusive FIFO of "
                   "waiters, completions posted, the handler's or asio's recycling allocator) and "
                   "`benchmarks/baselines/channel_counting_semaphore.hpp` (an "
                   "`asio::experimental::concurrent_channel<void(error_code)>` of capacity N: acquire = "
                   "`async_send`, release = `try_receive`). The baselines' token-less `acquire()` defaults to "
                   "`asio::deferred`. 4 permits (one held throughout) for U1/U2, 1 for U3.\n")
        doc.append(unkeyed_table(res))
        doc.append("")
        doc.append(table(["target", "measured", "verdict"], unkeyed_targets(res)))
        doc.append("")
    if has_fleet(res):
        doc.append(fleet_section(res, meta))
        doc.append("")
    doc.append("## Chart\n")
    doc.append("![keysem vs the baselines](benchmarks.png)\n")
    doc.append("Time per operation relative to the mutex baseline (1.0, log scale; lower is better). "
               "Data: `docs/bench-chart.dat`.\n")
    doc.append("## Reference points (other ecosystems, from issue 4, same machine class)\n")
    doc.append("Go keyed-semaphore ~100–150 ns per uncontended Wait+Release, ~167 ns cycling over 100k keys; "
               "Rust `DashMap<String, Arc<tokio::Semaphore>>` ~54 ns hot key, ~163 ns over 100k keys; tokio "
               "semaphore ~20 ns try_acquire+drop, ~32 ns immediate `acquire().await`, ~224 ns per contended "
               "hand-off. Not measured here.\n")
    if args.analysis:
        with open(args.analysis) as f:
            doc.append(f.read().rstrip() + "\n")

    with open(args.out, "w") as f:
        f.write("\n".join(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
