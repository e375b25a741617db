"""End-to-end latency percentiles against offered load: a PNG and the JSON behind it.

Start the system first (`lmrec serve ...`), then:

    python bench/e2e_load_curve.py --target 127.0.0.1:50051 --rates 5,10,20,30,40,60 --duration 15

writes docs/benchmarks/load_curve.png and docs/benchmarks/load_curve.json. Each point is an open-loop
run (`lmrec_tools.loadtest.run_load`), so past saturation the curve shows queueing delay rather than
flattening out the way a closed-loop tool's would. The issue's target (p99 within --target-p99-ms at
--target-rate, no failed calls) is drawn on the plot and judged in the JSON (`target`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path

from lmrec_data.request_mix import MixShares, default_mix
from lmrec_tools.loadtest import add_rate_sweep_arguments, is_loopback_target, run_load
from lmrec_tools.loadtest_report import LoadReport, describe_machine

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PNG = REPO_ROOT / "docs" / "benchmarks" / "load_curve.png"
DEFAULT_JSON = REPO_ROOT / "docs" / "benchmarks" / "load_curve.json"
PLOTTED = ("p50", "p90", "p99", "p99.9")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rate_sweep_arguments(parser, "5,10,20,30,40,60", 15.0)
    parser.add_argument("--pause", type=float, default=1.0, help="idle seconds between rates, to drain queues")
    parser.add_argument("--stop-error-rate", type=float, default=0.5,
                        help="skip higher rates once this share of calls fails (default %(default)s)")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--label", default="", help="what was measured (build, flags), shown in the title")
    parser.add_argument("--target-rate", type=float, default=30.0, help="offered rate the target is judged at")
    parser.add_argument("--target-p99-ms", type=float, default=50.0, help="p99 the target allows, ms")
    return parser.parse_args(argv)


async def sweep(args: argparse.Namespace) -> tuple[list[LoadReport], list[float]]:
    """Runs the rates in order; returns the reports and the 1-minute load average after each (other
    processes on a shared machine show up there)."""
    if args.warmup > 0:
        await run_load(args.target, rate=args.rates[0], duration=args.warmup, timeout_s=args.timeout,
                       mix=default_mix(args.data, k=args.k, seed=args.seed + 1000))
    reports: list[LoadReport] = []
    loads: list[float] = []
    for rate in args.rates:
        mix = default_mix(args.data, shares=MixShares(), k=args.k, seed=args.seed)
        report = await run_load(args.target, rate=rate, duration=args.duration, timeout_s=args.timeout, mix=mix)
        reports.append(report)
        loads.append(os.getloadavg()[0])
        error_share = report.errors / report.count if report.count else 1.0
        print(f"offered {rate:g} req/s: achieved {report.rps:.1f}, errors {report.errors}/{report.count}, "
              f"p50 {report.percentile_ms(50):.1f} ms, p99 {report.percentile_ms(99):.1f} ms", file=sys.stderr)
        if error_share > args.stop_error_rate:
            print(f"stopping: {error_share:.0%} of calls failed at {rate:g} req/s", file=sys.stderr)
            break
        await asyncio.sleep(args.pause)
    return reports, loads


def judge_target(reports: list[LoadReport], rate: float, p99_ms: float) -> dict:
    """Whether the run at `rate` had p99 <= `p99_ms` and no failed calls (degraded answers are not failures)."""
    verdict = {"rate": rate, "p99Ms": p99_ms}
    at_rate = [r for r in reports if r.offered_rate == rate]
    if not at_rate:
        return {**verdict, "met": None, "why": f"no run at {rate:g} req/s"}
    report = at_rate[0]
    measured = report.latency_ms()["p99"]
    met = measured <= p99_ms and report.errors == 0
    return {**verdict, "met": met, "measuredP99Ms": measured, "errors": report.errors,
            "why": f"p99 {measured:.1f} ms {'<=' if measured <= p99_ms else '>'} {p99_ms:g} ms, "
                   f"{report.errors} failed of {report.count}"}


def curve_document(args: argparse.Namespace, reports: list[LoadReport], loads: list[float],
                   machine: dict[str, str]) -> dict:
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": "bench/e2e_load_curve.py",
        "address": args.target,
        "label": args.label,
        "machine": machine,
        "durationPerRateS": args.duration,
        "timeoutS": args.timeout,
        "k": args.k,
        "seed": args.seed,
        "target": judge_target(reports, args.target_rate, args.target_p99_ms),
        "points": [
            {
                "offeredRate": r.offered_rate,
                "achievedRate": r.rps,
                "count": r.count,
                "errors": r.errors,
                "degraded": r.degraded,
                "statusCodeDistribution": r.status_counts,
                "latencyMs": r.latency_ms(),
                "loadAverage1m": load,
            }
            for r, load in zip(reports, loads)
        ],
        "reports": [r.to_json_dict() for r in reports],
    }


def plot(document: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = document["points"]
    offered = [p["offeredRate"] for p in points]
    fig, (ax, ax_rate) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=[3, 1])
    for name in PLOTTED:
        ax.plot(offered, [p["latencyMs"][name] for p in points], marker="o", label=name)
    ax.set_yscale("log")
    # Plain millisecond labels; the default 6x10^0 style is hard to read on a latency axis.
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    target = document.get("target")
    if target:
        ax.axhline(target["p99Ms"], color="red", linestyle=":", linewidth=1)
        ax.axvline(target["rate"], color="red", linestyle=":", linewidth=1)
        verdict = {True: "met", False: "missed", None: "not measured"}[target["met"]]
        ax.annotate(f"target: p99 <= {target['p99Ms']:g} ms at {target['rate']:g} req/s ({verdict})",
                    (target["rate"], target["p99Ms"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8, color="red")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    for p in points:
        if p["errors"]:
            ax.annotate(f"{p['errors']} err", (p["offeredRate"], p["latencyMs"]["p99"]),
                        textcoords="offset points", xytext=(4, 6), fontsize=8, color="red")
    ax_rate.plot(offered, offered, linestyle="--", color="grey", label="offered")
    ax_rate.plot(offered, [p["achievedRate"] for p in points], marker="o", label="completed")
    ax_rate.set_xlabel("offered load (req/s, open loop)")
    ax_rate.set_ylabel("req/s")
    ax_rate.grid(True, alpha=0.3)
    ax_rate.legend()
    machine = document["machine"]
    title = f"lmrec Recommend end to end - {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    if machine.get("gpu"):
        title += f", {machine['gpu']}"
    if document.get("label"):
        title += f"\n{document['label']}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not is_loopback_target(args.target) and not args.allow_remote:
        print(f"{args.target} is not a loopback address; pass --allow-remote", file=sys.stderr)
        return 2
    reports, loads = asyncio.run(sweep(args))
    document = curve_document(args, reports, loads, describe_machine())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2))
    plot(document, args.png)
    print(f"target: {document['target']}", file=sys.stderr)
    print(f"wrote {args.json} and {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
