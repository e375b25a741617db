"""Ranking worker model compute: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8, one run.

    python bench/ranking_bench.py                                   # artifacts/minilm-zeroshot, CPU
    python bench/ranking_bench.py --bundle-dir artifacts/lmrec-ml100k --batch-sizes 1,8,32,64,128
    python bench/ranking_bench.py --providers cpu,cuda              # adds ONNX FP32/FP16 on CUDA

Same weights on every side: the ONNX files the bundle's manifest lists for `--role` (default `encoder`)
and, for PyTorch, the HF weights they were exported from (the bundle's `hf_model/` folder when it has
one, else the manifest's `encoder.base_model`), wrapped in the exporter's own `PooledEncoder` (mean
pooling + L2 normalisation) as the stock HF model, and for BERT-family weights also in `PackedEncoder`,
the graph the ONNX files hold (padding skipped outside attention); all variants compute the same
function, and the run fails unless each PyTorch variant and ONNX FP32 agree (cosine > 0.99 on every row).

Inputs are ML-100K item texts (`lmrec_data.datasets`), tokenised and padded exactly as the ranking worker
does (`TextEncoder.tokenize`); timing covers the model call, and the tokenisation that precedes it in the
worker is timed on its own. Variants are interleaved call by call, in a rotating order, so that load
from other processes on a shared machine falls on all of them alike. Every side gets the same intra-op
thread count; ONNX Runtime's thread spinning is off unless --ort-spinning (see `bench_session`). Optionally times the worker's whole `Rank` of N candidates in process
(model, item store, micro-batcher and servicer; no network).

Writes docs/benchmarks/ranking.json and, with --markdown, a results table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmrec_data.datasets import load_dataset  # noqa: E402
from lmrec_tools.loadtest_report import describe_machine  # noqa: E402
from lmrec.bundle import Bundle  # noqa: E402
from ranking_service.onnx_session import RuntimeChoice, run  # noqa: E402
from ranking_service.text_encoder import TextEncoder  # noqa: E402

DEFAULT_BUNDLE = Path("artifacts/minilm-zeroshot")
DEFAULT_JSON = REPO / "docs" / "benchmarks" / "ranking.json"
EAGER = "torch-eager-fp32"
EAGER_PACKED = "torch-eager-fp32-packed"
ORT_FP32 = "onnx-fp32"
ORT_INT8 = "onnx-int8"
TOKENIZE = "worker-tokenize"
PARITY_MIN_COSINE = 0.99
CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_PROVIDERS = ["CPUExecutionProvider"]


def csv_ints(text: str) -> list[int]:
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"positive integers expected, got {text}")
    return values


def csv_providers(text: str) -> list[str]:
    values = [x.strip().lower() for x in text.split(",") if x.strip()]
    if not values or any(v not in ("cpu", "cuda") for v in values):
        raise argparse.ArgumentTypeError(f"'cpu', 'cuda' or 'cpu,cuda' expected, got {text}")
    return values


def default_threads() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return "1" if cores == 1 else f"1,{cores}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle-dir", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--role", default="encoder", help="manifest model role to time (default %(default)s)")
    parser.add_argument("--batch-sizes", type=csv_ints, default=csv_ints("1,8,32,64,128"))
    parser.add_argument("--seconds-per-batch", type=float, default=20.0,
                        help="interleaved timing budget per batch size, all variants together")
    parser.add_argument("--min-rounds", type=int, default=10, help="rounds per batch size even past the budget")
    parser.add_argument("--max-rounds", type=int, default=2000)
    parser.add_argument("--threads", type=csv_ints, default=csv_ints(default_threads()),
                        help="intra-op thread counts, each a separate interleaved run; torch and ONNX Runtime "
                             "get the same count (default: 1 and all usable cores)")
    parser.add_argument("--providers", type=csv_providers, default=["cpu"],
                        help="cpu, cuda or cpu,cuda; cuda adds ONNX FP32 and FP16 on the CUDA provider")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let ONNX Runtime's idle threads spin, as the worker does (biases interleaving; "
                             "see bench_session)")
    parser.add_argument("--data", help="dataset for the texts (default: LMREC_DATA or ../shared/data/ml-100k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank-candidates", type=int, default=200,
                        help="also time the worker's in-process Rank over this many candidates (0: skip)")
    parser.add_argument("--rank-calls", type=int, default=300)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--markdown", type=Path, help="also write the results tables here")
    parser.add_argument("--label", default="", help="what was measured, kept in the JSON")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# Variants: each maps (input_ids, attention_mask) to unit vectors.

Feeds = tuple[np.ndarray, np.ndarray]


@dataclass
class Variant:
    name: str
    run: Callable[[Feeds], np.ndarray]
    note: str


def hf_weights_dir(bundle: Bundle) -> str:
    """The HF weights the bundle was exported from: its own `hf_model/` when it has one (trained bundles)."""
    own = bundle.dir / "hf_model"
    if own.is_dir():
        return str(own)
    from training.lm_source import resolve_model_dir

    return resolve_model_dir(bundle.manifest.encoder.base_model)


def torch_variants(bundle: Bundle) -> tuple[Callable[[int], list[Variant]], dict]:
    """Loads the HF weights once; returns a factory of eager variants for a given thread count.

    The baseline is the stock HF model as a PyTorch user runs it. For BERT-family weights a second eager
    variant runs the exporter's `PackedEncoder` (what the ONNX graphs compute: padding skipped outside
    attention), so the table separates what the runtime and INT8 gain from what the packing gains.
    """
    import torch
    from transformers import AutoModel

    from training.export_encoder import PooledEncoder
    from training.packed_encoder import PackedEncoder, supports_packing

    spec = bundle.manifest.encoder
    if spec.pooling != "mean" or not spec.normalized:
        raise SystemExit(f"{bundle.dir}: PyTorch side replicates mean pooling + L2 norm; the manifest says "
                         f"pooling={spec.pooling}, normalized={spec.normalized}")
    source = hf_weights_dir(bundle)
    encoder = AutoModel.from_pretrained(source)
    modules = {EAGER: PooledEncoder(encoder).eval()}
    if supports_packing(encoder):
        modules[EAGER_PACKED] = PackedEncoder(encoder).eval()

    def forward_of(module: torch.nn.Module) -> Callable[[Feeds], np.ndarray]:
        def forward(feeds: Feeds) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(feeds[0]), torch.from_numpy(feeds[1])).numpy()
        return forward

    def for_threads(threads: int) -> list[Variant]:
        torch.set_num_threads(threads)  # process-wide; runs with different counts do not overlap
        return [Variant(name, forward_of(module), f"PyTorch {torch.__version__} eager {type(module).__name__}, "
                        "no torch.compile") for name, module in modules.items()]

    info = {"weights": source, "torch": torch.__version__,
            "attn_implementation": getattr(encoder.config, "_attn_implementation", "?")}
    return for_threads, info


def bench_session(path: Path, providers: list[str], threads: int, spinning: bool):
    """The worker's session settings (`ranking_service.onnx_session.new_session`), spinning made explicit.

    With spinning on, ONNX Runtime's idle intra-op threads keep polling for work well after a call
    returns; on two cores that steals the CPU from whatever runs next (measured here: PyTorch batch-1
    latency 12 ms alone, 28 ms right after an ONNX call with spinning, 12 ms without), which would
    bias an interleaved comparison against the variant that follows. Off by default for that reason.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_variant(name: str, bundle: Bundle, role: str, precision: str, providers: list[str], threads: int,
                 spinning: bool) -> Variant:
    runtime = RuntimeChoice(precision, providers)
    path = bundle.path(role, precision)
    session = bench_session(path, providers, threads, spinning)
    if session.get_providers()[0] != providers[0]:
        raise SystemExit(f"{name}: asked for {providers[0]}, ONNX Runtime gave {session.get_providers()[0]}")

    def forward(feeds: Feeds) -> np.ndarray:
        return run(session, {"input_ids": feeds[0], "attention_mask": feeds[1]}, runtime.on_cuda)[0]

    return Variant(name, forward, f"{path.name} on {providers[0]}, ONNX Runtime {ort_version()}")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# --------------------------------------------------------------------------------------------------
# Measurement


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def latency_summary(seconds: list[float], batch: int) -> dict:
    ms = np.asarray(seconds) * 1000.0
    mean = float(ms.mean())
    p50 = float(np.percentile(ms, 50))
    return {
        "calls": int(len(ms)),
        "mean_ms": mean,
        "p50_ms": p50,
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "texts_per_s": batch / mean * 1000.0,
        "texts_per_s_at_p50": batch / p50 * 1000.0,
    }


def time_batch_size(variants: list[Variant], batches: list[tuple[list[str], Feeds]], tokenize,
                    args) -> dict[str, list[float]]:
    """Round r runs every variant once on batch r (mod pool), starting at variant r (mod n); each round
    also times the worker's tokenisation of that batch (`TOKENIZE`), which precedes every model call."""
    for _, feeds in batches[:2]:  # warm-up: allocator, thread pools, lazy init
        for v in variants:
            v.run(feeds)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    times[TOKENIZE] = []
    stop_at = time.perf_counter() + args.seconds_per_batch
    rounds = 0
    while rounds < args.max_rounds and (rounds < args.min_rounds or time.perf_counter() < stop_at):
        texts, feeds = batches[rounds % len(batches)]
        started = time.perf_counter()
        tokenize(texts)
        times[TOKENIZE].append(time.perf_counter() - started)
        shift = rounds % len(variants)
        for v in variants[shift:] + variants[:shift]:
            started = time.perf_counter()
            v.run(feeds)
            times[v.name].append(time.perf_counter() - started)
        rounds += 1
    return times


def make_batches(texts: list[str], batch: int, pool: int, tokenize, rng: random.Random) -> list[tuple[list[str], Feeds]]:
    out = []
    for _ in range(pool):
        chosen = rng.sample(texts, batch) if batch <= len(texts) else [rng.choice(texts) for _ in range(batch)]
        out.append((chosen, tokenize(chosen)))
    return out


def ratio(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key]


# --------------------------------------------------------------------------------------------------
# The worker's whole Rank, in process


class _NoDeadline:
    """Stands in for a grpc ServicerContext: the bench calls the servicer directly, without a deadline."""

    def time_remaining(self):
        return None


def time_rank(bundle_dir: Path, items: list, threads: int, args) -> dict:
    from lmrec.v1 import ranking_service_pb2 as rpb
    from lmrec.v1.common_pb2 import UserContext
    from lmrec_data.request_mix import QUERIES
    from ranking_service.model import load_model
    from ranking_service.hot_swap import Serving, ServingHolder
    from ranking_service.server import new_batcher
    from ranking_service.servicer import RankingServicer
    from ranking_service.settings import RankingSettings

    with tempfile.TemporaryDirectory(prefix="ranking-bench-") as state_dir:
        settings = RankingSettings(bundle_dir=bundle_dir, state_dir=Path(state_dir), device="cpu",
                                   intra_op_threads=threads)
        model = load_model(settings)
        ids = [it.item_id for it in items]
        rng = random.Random(args.seed)

        async def measure() -> dict:
            batcher = new_batcher(settings, model)
            batcher.start()
            servicer = RankingServicer(ServingHolder(Serving(model, batcher)))
            out = {}
            try:
                # The catalogue goes in the way the gateway puts it there: Encode with item ids.
                started = time.perf_counter()
                for i in range(0, len(items), 64):
                    await servicer.Encode(rpb.EncodeRequest(inputs=[
                        rpb.EncodeInput(item_id=it.item_id, text=it.text) for it in items[i: i + 64]]),
                        _NoDeadline())
                out["catalogue_encode_s"] = time.perf_counter() - started
                for label, with_query in (("with_query", True), ("history_only", False)):
                    seconds = []
                    for _ in range(args.rank_calls):
                        request = rpb.RankRequest(
                            context=UserContext(user_id="bench", history_item_ids=rng.sample(ids, 30),
                                                query=rng.choice(QUERIES) if with_query else ""),
                            candidate_item_ids=rng.sample(ids, min(args.rank_candidates, len(ids))))
                        t0 = time.perf_counter()
                        await servicer.Rank(request, _NoDeadline())
                        seconds.append(time.perf_counter() - t0)
                    out[label] = latency_summary(seconds, args.rank_candidates)
            finally:
                await batcher.close()
            return out

        result = asyncio.run(measure())
        model.store.close()
    return {"candidates": args.rank_candidates, "history_items": 30, "precision": model.runtime.precision,
            "max_wait_ms": settings.max_wait_ms, "catalogue_items": len(items), **result}


# --------------------------------------------------------------------------------------------------


def build_variants(args, bundle: Bundle, eager_for: Callable[[int], list[Variant]], threads: int) -> list[Variant]:
    variants = eager_for(threads)
    have = bundle.manifest.models.get(args.role, {})
    if "cpu" in args.providers:
        for name, precision in ((ORT_FP32, "fp32"), (ORT_INT8, "int8")):
            if precision in have:
                variants.append(onnx_variant(name, bundle, args.role, precision, CPU_PROVIDERS, threads,
                                             args.ort_spinning))
    if "cuda" in args.providers:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"--providers cuda: ONNX Runtime has no CUDA provider (has {ort.get_available_providers()})")
        for precision in ("fp32", "fp16"):
            if precision in have:
                variants.append(onnx_variant(f"onnx-{precision}-cuda", bundle, args.role, precision,
                                             CUDA_PROVIDERS, threads, args.ort_spinning))
    if not any(v.name in (ORT_FP32, "onnx-fp32-cuda") for v in variants):
        raise SystemExit(f"{args.bundle_dir}: no fp32 '{args.role}' model to check PyTorch against")
    return variants


def parity(variants: list[Variant], feeds: Feeds) -> dict:
    outs = {v.name: v.run(feeds) for v in variants}
    reference = outs[ORT_FP32] if ORT_FP32 in outs else outs["onnx-fp32-cuda"]
    return {f"{name}_vs_onnx_fp32_min_cosine": float(cosine_rows(out, reference).min())
            for name, out in outs.items() if out is not reference}


def run_threads(args, variants: list[Variant], texts: list[str], tokenizer: TextEncoder, threads: int) -> dict:
    """One interleaved run over all batch sizes at one thread count."""
    rng = random.Random(args.seed)  # the same batches at every thread count
    load_before = os.getloadavg()
    results, parities, shapes, ratios = {}, {}, {}, {}
    for batch in args.batch_sizes:
        batches = make_batches(texts, batch, pool=8, tokenize=tokenizer.tokenize, rng=rng)
        parities[batch] = parity(variants, batches[0][1])
        for eager in (v.name for v in variants if v.name in (EAGER, EAGER_PACKED)):
            eager_cos = parities[batch][f"{eager}_vs_onnx_fp32_min_cosine"]
            if eager_cos <= PARITY_MIN_COSINE:
                raise SystemExit(f"batch {batch}: {eager} and ONNX FP32 disagree (min cosine {eager_cos:.4f}); "
                                 "the comparison would not be of the same model")
        shapes[batch] = {"padded_width_mean": float(np.mean([f[0].shape[1] for _, f in batches])),
                         "real_tokens_mean": float(np.mean([f[1].sum(1).mean() for _, f in batches]))}
        times = time_batch_size(variants, batches, tokenizer.tokenize, args)
        row = results[batch] = {name: latency_summary(s, batch) for name, s in times.items()}
        ratios[batch] = {}
        for name in row:
            if name not in (EAGER, TOKENIZE):
                ratios[batch][f"{name}/eager"] = ratio(row[name], row[EAGER], "texts_per_s")
                ratios[batch][f"{name}/eager_at_p50"] = ratio(row[name], row[EAGER], "texts_per_s_at_p50")
            if name not in (EAGER, EAGER_PACKED, TOKENIZE) and EAGER_PACKED in row:
                ratios[batch][f"{name}/eager_packed"] = ratio(row[name], row[EAGER_PACKED], "texts_per_s")
        print(f"threads {threads} batch {batch:4d} (width {shapes[batch]['padded_width_mean']:.0f}): " + "  ".join(
            f"{n} {r['texts_per_s']:.0f}/s p50 {r['p50_ms']:.1f} ms" for n, r in row.items()), file=sys.stderr)
    return {"threads": threads, "load_average_before_after": [list(load_before), list(os.getloadavg())],
            "shapes": shapes, "parity": parities, "results": results, "ratios": ratios}


def main(argv=None) -> int:
    args = parse_args(argv)
    bundle = Bundle.load(args.bundle_dir)
    manifest = bundle.manifest
    if args.role not in manifest.models:
        raise SystemExit(f"{args.bundle_dir} has no '{args.role}' model (roles: {sorted(manifest.models)})")
    dataset = load_dataset(args.data)
    texts = [it.text for it in dataset.items]
    eager_for, torch_info = torch_variants(bundle)
    # Tokenise exactly as the worker does (length buckets), with the bundle's tokenizer; the encoder's
    # own session is never run here.
    tokenizer = TextEncoder(bundle, RuntimeChoice("fp32", CPU_PROVIDERS), 1, 1)
    runs, notes = [], {}
    for threads in args.threads:
        variants = build_variants(args, bundle, eager_for, threads)
        notes = {v.name: v.note for v in variants}
        runs.append(run_threads(args, variants, texts, tokenizer, threads))
        del variants  # frees the sessions (and their thread pools) before the next count
    rank = None
    if args.rank_candidates > 0 and args.role == "encoder":
        rank = time_rank(bundle.dir, dataset.items, max(args.threads), args)
        print(f"Rank of {args.rank_candidates}: with query p50 {rank['with_query']['p50_ms']:.2f} ms "
              f"p99 {rank['with_query']['p99_ms']:.2f} ms; history only p50 {rank['history_only']['p50_ms']:.2f} ms",
              file=sys.stderr)
    document = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": "bench/ranking_bench.py",
        "label": args.label,
        "machine": describe_machine(),
        "bundle": {"dir": str(args.bundle_dir), "model_version": manifest.model_version, "role": args.role,
                   "base_model": manifest.encoder.base_model, "max_length": manifest.encoder.max_length},
        "onnxruntime": ort_version(),
        "torch": torch_info,
        "variants": notes,
        "ort_spinning": args.ort_spinning,
        "texts": f"{dataset.name} item texts, sampled with seed {args.seed}",
        "seconds_per_batch": args.seconds_per_batch,
        "runs": runs,
        "rank": rank,
        "cuda": "measured" if "cuda" in args.providers else "not measured (no CUDA provider used in this run)",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    table = markdown(document)
    sys.stdout.write(table)
    if args.markdown:
        args.markdown.write_text(table)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def markdown(document: dict) -> str:
    names = list(document["variants"])
    machine = ", ".join(f"{k}: {v}" for k, v in document["machine"].items())
    lines = [f"`bench/ranking_bench.py`, {document['generated']}, bundle {document['bundle']['model_version']} "
             f"({document['bundle']['role']}), {document['texts']}. Machine: {machine}. Texts/s is the batch "
             "size over the mean call time.", ""]
    for measured in document["runs"]:
        load = measured["load_average_before_after"]
        lines += [f"{measured['threads']} intra-op thread(s) (1-min load average {load[0][0]:.2f} before, "
                  f"{load[1][0]:.2f} after):", "",
                  "| batch | width | " + " | ".join(f"{n} texts/s (p50 / p99 ms)" for n in names)
                  + " | tokenise p50 ms | INT8 / eager | ONNX FP32 / eager | INT8 / eager packed |",
                  "|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|"]
        for batch, row in measured["results"].items():
            r = measured["ratios"][batch]
            cells = [f"{row[n]['texts_per_s']:.0f} ({row[n]['p50_ms']:.1f} / {row[n]['p99_ms']:.1f})" for n in names]
            lines.append(f"| {batch} | {measured['shapes'][batch]['padded_width_mean']:.0f} | " + " | ".join(cells)
                         + f" | {row[TOKENIZE]['p50_ms']:.2f}"
                         + f" | {r.get(ORT_INT8 + '/eager', float('nan')):.2f}x"
                         + f" | {r.get(ORT_FP32 + '/eager', float('nan')):.2f}x"
                         + f" | {r.get(ORT_INT8 + '/eager_packed', float('nan')):.2f}x |")
        lines.append("")
    rank = document.get("rank")
    if rank:
        lines += [f"Whole `Rank` in process ({rank['candidates']} candidates, {rank['precision']}, "
                  f"batcher max_wait {rank['max_wait_ms']:g} ms, calls one at a time):", "",
                  "| context | calls | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
        for label in ("with_query", "history_only"):
            s = rank[label]
            lines.append(f"| {label.replace('_', ' ')} | {s['calls']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                         f"| {s['max_ms']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
