#!/usr/bin/env python3
"""Before/after comparison of two builds of one benchmark program.

Runs the two binaries alternately (A B A B ...; each run is one process and
one repetition of every selected benchmark), then prints, per benchmark, the
median and min-max of each side and the ratio of medians B/A, as a Markdown
table. The baselines (mutex, channel) are the same code in both binaries:
their B/A ratios are an A/A control, the noise of the machine during the run.

Usage:
  benchmarks/tools/ab_compare.py --a OLD_BINARY --b NEW_BINARY \
      [--runs 5] [--filter REGEX] [--min-time 0.2] [--out DIR] [--label-a 0.1 --label-b new]

The metric is ns_per_op (the benchmark's counter) when present, else
cpu_time (single-threaded workloads are timed by thread CPU time).
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
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out_file) as f:
        data = json.load(f)
    values = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            continue
        if "ns_per_op" in b:
            v = b["ns_per_op"] * 1e9  # counter is seconds per op
        else:
            v = b["cpu_time"]
        values[b["name"]] = v
    return " ".join(cmd), values


def fmt(ns):
    return f"{ns / 1000:.3g} µs" if ns >= 1000 else f"{ns:.3g} ns"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--filter", default=r"^W(1|1b|2|3)\.")
    p.add_argument("--min-time", default="0.2")
    p.add_argument("--out", default="build/bench/ab")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = {"a": {}, "b": {}}
    commands = []
    for i in range(args.runs):
        for side, binary in (("a", args.a), ("b", args.b)):
            out_file = os.path.join(args.out, f"{side}{i}.json")
            cmd, values = run_once(binary, args.filter, args.min_time, out_file)
            if i == 0:
                commands.append(cmd)
            for name, v in values.items():
                results[side].setdefault(name, []).append(v)
            print(f"run {i + 1}/{args.runs} {side}: {len(values)} benchmarks", file=sys.stderr)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"commands": commands, "results": results}, f, indent=1)
    print(f"| benchmark | {args.label_a} median (min–max) | {args.label_b} median (min–max) | "
          f"{args.label_b} / {args.label_a} |")
    print("| --- | --- | --- | --- |")
    for name in results["a"]:
        a = results["a"][name]
        b = results["b"].get(name)
        if not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {name} | {fmt(ma)} ({fmt(min(a))}–{fmt(max(a))}) | "
              f"{fmt(mb)} ({fmt(min(b))}–{fmt(max(b))}) | {mb / ma:.2f}× |")


if __name__ == "__main__":
    main()
