"""Recommend latency (p50/p99) at a few offered rates, as a markdown section naming the machine.

Start the system first (`lmrec serve ...`), then:

    python bench/recommend_latency.py --target 127.0.0.1:50051 --rates 5,10,20 --duration 10 \
        --out docs/benchmarks/recommend_latency.md

Each rate is an open-loop run (`lmrec_tools.loadtest.run_load`): latency counts from each request's scheduled
send time, so queueing in an overloaded system shows up instead of being hidden. The request mix is
the loadtest one (known and cold users, free-text queries, genre filters) with a fixed seed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from pathlib import Path

from lmrec_data.request_mix import MixShares, default_mix
from lmrec_tools.loadtest import add_rate_sweep_arguments, is_loopback_target, run_load
from lmrec_tools.loadtest_report import LoadReport, describe_machine


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rate_sweep_arguments(parser, "5,10,20", 10.0)
    parser.add_argument("--out", help="also write the markdown section here")
    parser.add_argument("--json-out", help="also write the raw loadtest reports here")
    parser.add_argument("--label", default="", help="what was measured (build, flags), printed in the section")
    return parser.parse_args(argv)


async def measure(args: argparse.Namespace) -> list[LoadReport]:
    mix_args = dict(shares=MixShares(), k=args.k)
    if args.warmup > 0:
        await run_load(args.target, rate=args.rates[0], duration=args.warmup, timeout_s=args.timeout,
                       mix=default_mix(args.data, seed=args.seed + 1000, **mix_args))
    reports = []
    for rate in args.rates:
        mix = default_mix(args.data, seed=args.seed, **mix_args)
        report = await run_load(args.target, rate=rate, duration=args.duration, timeout_s=args.timeout, mix=mix)
        print(f"offered {rate:g} req/s: {report.count} calls, {report.errors} errors, "
              f"p50 {report.percentile_ms(50):.1f} ms, p99 {report.percentile_ms(99):.1f} ms", file=sys.stderr)
        reports.append(report)
    return reports


def markdown(args: argparse.Namespace, reports: list[LoadReport], machine: dict[str, str]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine_line = ", ".join(f"{k}: {v}" for k, v in machine.items())
    lines = [
        "## Recommend latency",
        "",
        f"Measured {when} against `{args.target}` with `bench/recommend_latency.py` "
        f"(open loop, {args.duration:g} s per rate after {args.warmup:g} s warm-up, k={args.k}, "
        f"deadline {args.timeout:g} s, mix: {reports[0].options.get('mix', '?') if reports else '?'}, "
        f"seed {args.seed}). Latency counts from each request's scheduled send time.",
        "",
        f"Machine: {machine_line}.",
    ]
    if args.label:
        lines += ["", f"System: {args.label}."]
    lines += [
        "",
        "| offered req/s | achieved req/s | calls | errors | degraded | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lat = r.latency_ms()
        lines.append(
            f"| {r.offered_rate:g} | {r.rps:.1f} | {r.count} | {r.errors} | {r.degraded} | {lat['p50']:.1f} "
            f"| {lat['p90']:.1f} | {lat['p99']:.1f} | {lat['p99.9']:.1f} | {lat['max']:.1f} |"
        )
    errors = {code: n for r in reports for code, n in r.status_counts.items() if code != "OK"}
    if errors:
        lines += ["", "Failed calls by status: " + ", ".join(f"{c} {n}" for c, n in sorted(errors.items())) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not is_loopback_target(args.target) and not args.allow_remote:
        print(f"{args.target} is not a loopback address; pass --allow-remote", file=sys.stderr)
        return 2
    reports = asyncio.run(measure(args))
    section = markdown(args, reports, describe_machine())
    sys.stdout.write(section)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(section)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps([r.to_json_dict() for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
