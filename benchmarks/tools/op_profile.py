#!/usr/bin/env python3
"""Counts, per operation of one benchmark, what callgrind sees: instructions,
strand passes, posts to the event loop, mutex locks and allocations.

Runs the benchmark program twice under `valgrind --tool=callgrind` with a
fixed iteration count (KEYSEM_BENCH_ITERATIONS = n, then 2n: the harness then
skips calibration), so the difference of the two runs is the cost of n
iterations without start-up. Each iteration does `--ops-per-iteration`
operations (W3: 8 coroutines x 2000 rounds = 16000 hand-offs).

  benchmarks/tools/op_profile.py --program build/bench/bin/keysem_bench_single_thread \\
      --filter '^W3.handoff/keysem$' --ops-per-iteration 16000 [--iterations 1]

Prints a Markdown table. Call counts come from callgrind_annotate's caller
tree (the "(Nx)" of every caller of a function). Atomic read-modify-writes
are the executions of `lock`-prefixed instructions and of `xchg` with a
memory operand (implicitly locked), found with objdump in every object the
run executed and counted from callgrind's per-instruction costs.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

# What is counted: label -> regular expression on the function's name.
COUNTED = [
    ("strand passes (`strand_executor_service::enqueue`)", r"strand_executor_service::enqueue\("),
    ("posts to the event loop (`scheduler::post_immediate_completion`)",
     r"scheduler::post_immediate_completion\("),
    ("`pthread_mutex_lock`", r"pthread_mutex_lock"),
    ("`malloc`", r"malloc\.c:malloc( |$)"),
    ("`memalign` (asio's recycling allocator missing its cache)", r"malloc\.c:memalign( |$)"),
    ("`free`", r"malloc\.c:free( |$)"),
    ("key hashes (`XXH3_64bits`)", r"XXH3_64bits"),
]


ATOMICS = "atomic read-modify-writes (`lock` prefix, `xchg` with memory)"


def callgrind(program, filter_, iterations, out):
    env = dict(os.environ, KEYSEM_BENCH_ITERATIONS=str(iterations))
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-pos=no",
         "--compress-strings=no", f"--callgrind-out-file={out}", program,
         f"--benchmark_filter={filter_}"],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def totals(out):
    """Total instructions and {function: calls} of one callgrind output."""
    text = subprocess.run(["callgrind_annotate", "--tree=caller", "--inclusive=no", out],
                          check=True, capture_output=True, text=True).stdout
    total = 0
    m = re.search(r"^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
    if m:
        total = int(m.group(1).replace(",", ""))
    calls = {}
    pending = 0
    for line in text.splitlines():
        caller = re.match(r"^\s*[\d,]+ \([\s\d.]+%\)\s+<\s.*\(([\d,]+)x\)", line)
        if caller:
            pending += int(caller.group(1).replace(",", ""))
            continue
        self_ = re.match(r"^\s*[\d,]+ \([\s\d.]+%\)\s+\*\s+(.*)$", line)
        if self_:
            name = self_.group(1)
            calls[name] = calls.get(name, 0) + pending
            pending = 0
        elif not line.strip():
            pending = 0
    return total, calls


def executions(out):
    """{(object, address): times executed} from a --dump-instr=yes output."""
    done = collections.Counter()
    obj = None
    call_cost_next = False
    with open(out) as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("calls="):
                call_cost_next = True  # the next cost line is a call's inclusive cost
            else:
                m = re.match(r"^(0x[0-9a-f]+) \S+ (\d+)", line)
                if m and obj:
                    if call_cost_next:
                        call_cost_next = False
                    else:
                        done[(obj, int(m.group(1), 16))] += int(m.group(2))
    return done


def locked_instructions(obj):
    """Addresses of the atomic read-modify-writes in an object file."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                          capture_output=True, text=True).stdout
    found = set()
    for line in text.splitlines():
        m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m and (m.group(2) == "lock" or (m.group(2).startswith("xchg") and "(" in m.group(3))):
            found.add(int(m.group(1), 16))
    return found


def atomic_rmws(done):
    objects = {obj for obj, _ in done}
    total = 0
    for obj in objects:
        if os.path.exists(obj):
            total += sum(done.get((obj, addr), 0) for addr in locked_instructions(obj))
    return total


def count(calls, pattern):
    rx = re.compile(pattern)
    return sum(n for name, n in calls.items() if rx.search(name))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--program", required=True, action="append",
                    help="benchmark program (repeat to compare several builds)")
    ap.add_argument("--filter", required=True, help="--benchmark_filter matching one benchmark")
    ap.add_argument("--ops-per-iteration", type=float, required=True)
    ap.add_argument("--iterations", type=int, default=1, help="n (the runs use n and 2n)")
    args = ap.parse_args()

    columns = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, program in enumerate(args.program):
            runs = []
            rmws = []
            for k in (1, 2):
                out = os.path.join(tmp, f"cg-{index}-{k}.out")
                callgrind(program, args.filter, k * args.iterations, out)
                runs.append(totals(out))
                rmws.append(atomic_rmws(executions(out)))
            (t1, c1), (t2, c2) = runs
            ops = args.iterations * args.ops_per_iteration
            column = {"instructions": (t2 - t1) / ops, ATOMICS: (rmws[1] - rmws[0]) / ops}
            for label, pattern in COUNTED:
                column[label] = (count(c2, pattern) - count(c1, pattern)) / ops
            columns.append(column)

    print(f"Per operation of `{args.filter}` ({args.ops_per_iteration:g} per iteration; "
          f"callgrind, runs of {args.iterations} and {2 * args.iterations} iterations):\n")
    print("| | " + " | ".join(f"`{p}`" for p in args.program) + " |")
    print("| --- |" + " --- |" * len(args.program))
    for label in ["instructions", ATOMICS] + [label for label, _ in COUNTED]:
        cells = [f"{c[label]:,.0f}" if label == "instructions" else f"{c[label]:.2f}" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
