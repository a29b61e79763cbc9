#!/usr/bin/env python3
"""Interleaved comparison of N builds of one benchmark program.

Like ab_compare.py, for more than two builds: runs the binaries in turn
(B1 B2 ... BN B1 B2 ...; each run is one process and one repetition of every
selected benchmark), then prints, per benchmark and per counter, the median
and min-max of each build and the ratio of each median to the first build's,
as Markdown tables. Baselines compiled from identical benchmark sources in
two builds are an A/A control of the machine's noise during the run.

Usage:
  benchmarks/tools/ab_multi.py --bin LABEL=BINARY --bin LABEL=BINARY [...] \
      [--runs 5] [--filter REGEX] [--min-time 0.2] [--out DIR] \
      [--counters ns_per_op,allocs_per_op]

Counters ending in "ns_per_op" are seconds per op in Google Benchmark's JSON
(report_ops) and are printed in ns; every other counter is printed as is.
When a benchmark has no ns_per_op, its cpu_time is used under that name.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_once(binary, flt, min_time, out_file):
    cmd = [binary, f"--benchmark_filter={flt}", f"--benchmark_min_time={min_time}",
           f"--benchmark_out={out_file}", "--benchmark_out_format=json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out_file) as f:
        data = json.load(f)
    values = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        if b.get("error_occurred"):
            print(f"error in {binary}: {b['name']}: {b.get('error_message')}", file=sys.stderr)
            continue
        row = {}
        for k, v in b.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                    k.endswith("_per_op") or k.endswith("_per_waiter")):
                row[k] = v * 1e9 if k == "ns_per_op" else v
        if "ns_per_op" not in row:
            row["ns_per_op"] = b["cpu_time"]
        values[b["name"]] = row
    return " ".join(cmd), values


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", action="append", required=True, help="LABEL=BINARY")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--filter", default=r"^W(1|1b|2|3)\.")
    p.add_argument("--min-time", default="0.2")
    p.add_argument("--out", default="build/bench/ab_multi")
    p.add_argument("--counters", default="ns_per_op")
    args = p.parse_args()
    bins = [b.split("=", 1) for b in args.bin]
    os.makedirs(args.out, exist_ok=True)
    results = {label: {} for label, _ in bins}
    commands = []
    loads = [os.getloadavg()[0]]
    for i in range(args.runs):
        for j, (label, binary) in enumerate(bins):
            out_file = os.path.join(args.out, f"{j}_{i}.json")
            cmd, values = run_once(binary, args.filter, args.min_time, out_file)
            if i == 0:
                commands.append(cmd)
            for name, row in values.items():
                for k, v in row.items():
                    results[label].setdefault(name, {}).setdefault(k, []).append(v)
            print(f"run {i + 1}/{args.runs} {label}: {len(values)} benchmarks, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        loads.append(os.getloadavg()[0])
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"commands": commands, "loads": loads, "results": results}, f, indent=1)
    first = bins[0][0]
    print(f"load average (1 min) before each round and at the end: "
          + ", ".join(f"{x:.2f}" for x in loads))
    for counter in args.counters.split(","):
        print(f"\n{counter}: median (min–max) of {args.runs}\n")
        print("| benchmark | " + " | ".join(label for label, _ in bins) + " | "
              + " | ".join(f"{label} / {first}" for label, _ in bins[1:]) + " |")
        print("| --- " * (2 * len(bins)) + "|")
        for name in results[first]:
            cells, medians = [], []
            for label, _ in bins:
                v = results[label].get(name, {}).get(counter)
                if not v:
                    cells.append("–")
                    medians.append(None)
                    continue
                m = statistics.median(v)
                medians.append(m)
                cells.append(f"{m:.4g} ({min(v):.4g}–{max(v):.4g})")
            if all(m is None for m in medians):
                continue
            ratios = [f"{m / medians[0]:.3f}×" if m is not None and medians[0] else "–"
                      for m in medians[1:]]
            print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
