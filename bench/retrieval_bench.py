"""Retrieval benchmark: lmrec's hnswlib index (in process and through gRPC) against exact numpy and faiss HNSW.

    python bench/retrieval_bench.py                 # 100k items, quick
    python bench/retrieval_bench.py --n 1000000     # the 1M target run (~6 GB RAM; 10-30 min per build on 2 cores)
    python bench/retrieval_bench.py --tables        # the markdown tables of docs/benchmarks/retrieval.json

Synthetic clustered 384-d vectors; queries are perturbed catalogue vectors. Reports, per index and ef:
build time, bytes per item (RSS delta while building), recall@10/@100 against exact search, single-query
QPS, p50 and p99 in process, QPS through gRPC at k=10 and k=100 (server pinned to one core, client on the
other), and p50/p99 with 500 excluded ids and with a 5% attribute filter (after that value's filter graph
is built, whose build time and memory are reported too; the plain, excluded and filtered searches run
interleaved query by query, so their ratio is not skewed by load that changes during the run). Adds its
run to docs/benchmarks/retrieval.json with the 1-minute load average at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As the server does (retrieval_service/__main__.py): one BLAS thread per exact scan, set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retrieval_service.index import VectorIndex, normalize  # noqa: E402
from retrieval_service.store import IndexStore  # noqa: E402

CATEGORIES = 20  # one category value = 5% of the catalogue
ATTR_FILTER = [("category", ["c3"])]


def rss_bytes() -> int:
    """Resident set size, after handing freed heap pages back to the OS so temporaries do not count."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_data(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 100), dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        x[start:stop] += 0.5 * rng.standard_normal((stop - start, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # Queries near catalogue items (noise of norm ~0.5 around a unit vector), as a user embedding would be.
    q = x[rng.integers(0, n, queries)] + (0.5 / np.sqrt(dim)) * rng.standard_normal((queries, dim)).astype(np.float32)
    return x, normalize(q)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k by inner product: all queries against one block of rows at a time (one matmul each)."""
    best_scores = np.empty((len(q), 0), dtype=np.float32)
    best_ids = np.empty((len(q), 0), dtype=np.int64)
    for start in range(0, len(x), 65_536):
        stop = min(len(x), start + 65_536)
        scores = q @ x[start:stop].T
        if allowed is not None:
            scores[:, ~allowed[start:stop]] = -np.inf
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, stop), (len(q), stop - start))], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def timed(fn, queries) -> tuple[list, np.ndarray]:
    results, lat = [], np.empty(len(queries))
    for i, query in enumerate(queries):
        t0 = time.perf_counter()
        results.append(fn(query))
        lat[i] = time.perf_counter() - t0
    return results, lat


def timed_side_by_side(fns, queries) -> list[tuple[list, np.ndarray]]:
    """`timed` for several searches whose latencies are compared, interleaved so that load drifting
    during the run hits them alike. Each step runs every search once, in a rotating order, each on its own
    query, a third of the query list apart: the same query never runs twice in a row, where the second
    search would find the first one's graph nodes in the CPU caches (a 2x effect at 1M items)."""
    n = len(queries)
    results = [[None] * n for _ in fns]
    lat = np.empty((len(fns), n))
    for i in range(n):
        for step in range(len(fns)):
            j = (i + step) % len(fns)
            k = (i + j * n // len(fns)) % n
            t0 = time.perf_counter()
            results[j][k] = fns[j](queries[k])
            lat[j, k] = time.perf_counter() - t0
    return [(results[j], lat[j]) for j in range(len(fns))]


def p99_ms(lat: np.ndarray) -> float:
    return float(np.percentile(lat, 99) * 1e3)


def p50_ms(lat: np.ndarray) -> float:
    return float(np.median(lat) * 1e3)


# ----------------------------------------------------------------------------- lmrec index


def build_lmrec(x: np.ndarray, args) -> tuple[VectorIndex, float, float]:
    ids = [f"item-{i}" for i in range(len(x))]
    attrs = [{"category": [f"c{i % CATEGORIES}"]} for i in range(len(x))]
    before = rss_bytes()
    index = VectorIndex(
        x.shape[1], m=args.m, ef_construction=args.ef_construction, initial_capacity=len(x),
        exact_scan_threshold=args.exact_scan_threshold, build_threads=os.cpu_count() or 1, ef_max=4096,
        filter_graph_share=args.filter_graph_share, filter_graph_m=args.filter_graph_m,
    )
    t0 = time.perf_counter()
    for start in range(0, len(x), 20_000):
        stop = start + 20_000
        index.upsert(ids[start:stop], x[start:stop], attrs[start:stop])
    build_s = time.perf_counter() - t0
    # The lists were made before the first reading and the index keeps no references into them (ids
    # live in its own byte table, attributes as combination numbers), so they are not counted.
    return index, build_s, (rss_bytes() - before) / len(x)


def build_value_graph(index: VectorIndex, query: np.ndarray) -> dict:
    """Builds the 5% filter's value graph (as its first use in a server would, in the background) and
    measures what it costs."""
    before, t0 = rss_bytes(), time.perf_counter()
    index.search(query, 10, filters=ATTR_FILTER)
    index.wait_for_filter_graphs()
    out = {"value_graph_build_s": time.perf_counter() - t0, "value_graph_bytes": rss_bytes() - before}
    print(f"value graph for {ATTR_FILTER}: {out}", flush=True)
    return out


def bench_lmrec(index: VectorIndex, x, q, truth10, truth100, truth_attr, excluded_ids, efs) -> list[dict]:
    rows = []
    label = lambda ids: [int(i.rsplit("-", 1)[1]) for i in ids]  # noqa: E731
    attr_filter = ATTR_FILTER
    for ef in efs:
        found100, _ = timed(lambda v: label(index.search(v, 100, ef=ef).ids), q)
        plans = {}

        def attr_search(v):
            result = index.search(v, 10, filters=attr_filter, ef=ef)
            plans[result.plan] = plans.get(result.plan, 0) + 1
            return label(result.ids)

        (found10, lat), (_, lat_ex), (found_attr, lat_attr) = timed_side_by_side([
            lambda v: label(index.search(v, 10, ef=ef).ids),
            lambda v: index.search(v, 10, exclude=excluded_ids, ef=ef),
            attr_search], q)
        rows.append({
            "index": "lmrec-hnswlib", "ef": ef, "items": len(x),
            "recall@10": recall(found10, truth10), "recall@100": recall(found100, truth100),
            "qps_inprocess": len(q) / lat.sum(), "p50_ms": float(np.median(lat) * 1e3), "p99_ms": p99_ms(lat),
            "filtered_p99_ms": p99_ms(lat_ex), "attr_filtered_p99_ms": p99_ms(lat_attr),
            "filtered_p50_ms": p50_ms(lat_ex), "attr_filtered_p50_ms": p50_ms(lat_attr),
            "attr_filtered_recall@10": recall(found_attr, truth_attr), "attr_filtered_plans": plans,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------ gRPC


def bench_grpc(index: VectorIndex, q: np.ndarray, efs: list[int], requests: int, concurrency: int) -> dict[int, dict]:
    """Serves a snapshot of `index` from `python -m retrieval_service` pinned to CPU 0; the client runs on CPU 1."""
    import grpc

    from lmrec.v1 import retrieval_service_pb2 as pb, retrieval_service_pb2_grpc

    out: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        store = IndexStore(index, data_dir, snapshot_every=10**9)
        store.snapshot()
        store.close()
        port_file = Path(tmp) / "port"
        env = {**os.environ, "LMREC_RETRIEVAL_EF_MAX": "4096", "LMREC_RETRIEVAL_INITIAL_CAPACITY": str(len(index)),
               "LMREC_RETRIEVAL_SEARCH_THREADS": "1", "LMREC_LOG_LEVEL": "WARNING"}
        cpus = sorted(os.sched_getaffinity(0))
        server_cpu, client_cpu = cpus[0], cpus[-1]
        process = subprocess.Popen(
            ["taskset", "-c", str(server_cpu), sys.executable, "-m", "retrieval_service", "--port", "0",
             "--port-file", str(port_file), "--data-dir", str(data_dir), "--dimension", str(q.shape[1])],
            cwd=REPO, env=env,
        )
        os.sched_setaffinity(0, {client_cpu})
        try:
            deadline = time.monotonic() + 600
            while not port_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("benchmark server did not start")
                time.sleep(0.1)
            target = f"127.0.0.1:{port_file.read_text().strip()}"
            requests_by_ef = {
                ef: [pb.SearchRequest(query_vector=v.tolist(), k=10, ef=ef) for v in q] for ef in efs
            }
            with grpc.insecure_channel(target) as channel:
                stub = retrieval_service_pb2_grpc.RetrievalServiceStub(channel)
                for r in requests_by_ef[efs[0]][:50]:  # warm-up
                    stub.Search(r)
                for ef in efs:
                    _, lat = timed(stub.Search, requests_by_ef[ef])
                    out[ef] = {"grpc_sequential_qps": len(lat) / lat.sum(), "grpc_p50_ms": float(np.median(lat) * 1e3),
                               "grpc_p99_ms": p99_ms(lat)}

            async def saturate(reqs) -> float:
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = retrieval_service_pb2_grpc.RetrievalServiceStub(channel)
                    counter = iter(range(requests))

                    async def worker():
                        for i in counter:
                            await stub.Search(reqs[i % len(reqs)])

                    t0 = time.perf_counter()
                    await asyncio.gather(*(worker() for _ in range(concurrency)))
                    return requests / (time.perf_counter() - t0)

            for ef in efs:
                out[ef]["qps_grpc"] = asyncio.run(saturate(requests_by_ef[ef]))
                # The recall@100 target's own load: k=100 answers (ef is then effectively max(ef, 100)).
                k100 = [pb.SearchRequest(query_vector=r.query_vector, k=100, ef=ef) for r in requests_by_ef[ef]]
                out[ef]["qps_grpc_k100"] = asyncio.run(saturate(k100))
                print(f"grpc ef={ef}: {out[ef]}", flush=True)
        finally:
            os.sched_setaffinity(0, set(cpus))
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return out


# ----------------------------------------------------------------------------------- faiss


def bench_faiss(x, q, truth10, truth100, truth_attr, excluded_labels, allowed_attr, efs, args) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(x.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    t0 = time.perf_counter()
    index.add(x)
    build_s = time.perf_counter() - t0
    # An RSS delta here would be skewed by memory the freed lmrec index handed back to malloc;
    # the serialised size is faiss's in-memory layout (vectors + graph) to within a few bytes per item.
    bytes_per_item = len(faiss.serialize_index(index)) / len(x)
    faiss.omp_set_num_threads(1)
    not_excluded = faiss.IDSelectorNot(faiss.IDSelectorBatch(excluded_labels))
    in_category = faiss.IDSelectorBatch(np.flatnonzero(allowed_attr).astype(np.int64))
    rows = []
    for ef in efs:
        plain = faiss.SearchParametersHNSW(efSearch=ef)
        ex = faiss.SearchParametersHNSW(efSearch=ef, sel=not_excluded)
        attr = faiss.SearchParametersHNSW(efSearch=ef, sel=in_category)
        plain100 = faiss.SearchParametersHNSW(efSearch=max(ef, 100))
        found100, _ = timed(lambda v: index.search(v[None], 100, params=plain100)[1][0].tolist(), q)
        (found10, lat), (_, lat_ex), (found_attr, lat_attr) = timed_side_by_side([
            lambda v: index.search(v[None], 10, params=plain)[1][0].tolist(),
            lambda v: index.search(v[None], 10, params=ex),
            lambda v: index.search(v[None], 10, params=attr)[1][0].tolist()], q)
        rows.append({
            "index": "faiss-hnswflat", "ef": ef, "items": len(x),
            "recall@10": recall(found10, truth10), "recall@100": recall(found100, truth100),
            "qps_inprocess": len(q) / lat.sum(), "p50_ms": float(np.median(lat) * 1e3), "p99_ms": p99_ms(lat),
            "filtered_p99_ms": p99_ms(lat_ex), "attr_filtered_p99_ms": p99_ms(lat_attr),
            "filtered_p50_ms": p50_ms(lat_ex), "attr_filtered_p50_ms": p50_ms(lat_attr),
            "attr_filtered_recall@10": recall(found_attr, truth_attr),
            "qps_grpc": None, "bytes_per_item": bytes_per_item, "build_s": build_s,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--efs", default="32,64,128,256")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--exact-scan-threshold", type=int, default=500)
    parser.add_argument("--filter-graph-share", type=float, default=0.1, help="0: no per-value filter graphs")
    parser.add_argument("--filter-graph-m", type=int, default=None, help="hnswlib M of the per-value filter graphs (default: --m)")
    parser.add_argument("--grpc-requests", type=int, default=2_000)
    parser.add_argument("--grpc-concurrency", type=int, default=8)
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "retrieval.json")
    parser.add_argument("--label", default="", help="names the run; a later run with the same n and label replaces it")
    parser.add_argument("--tables", action="store_true", help="print the markdown tables of --out and exit")
    args = parser.parse_args(argv)
    if args.tables:
        for run in json.loads(args.out.read_text())["runs"]:
            label = f" ({run['params']['label']})" if run["params"].get("label") else ""
            print(f"\n{run['params']['n']:,} items{label}\n\n{markdown_table(run)}")
        return
    efs = [int(e) for e in args.efs.split(",")]

    load_at_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    x, q = make_data(args.n, args.dim, args.queries)
    rng = np.random.default_rng(1)
    excluded = rng.choice(args.n, 500, replace=False)
    allowed_attr = np.arange(args.n) % CATEGORIES == 3
    truth10, truth100 = exact_topk(x, q, 10), exact_topk(x, q, 100)
    truth_attr = exact_topk(x, q, 10, allowed_attr)
    print(f"data + exact ground truth: {time.perf_counter() - t0:.1f}s", flush=True)

    index, build_s, bytes_per_item = build_lmrec(x, args)
    print(f"lmrec build: {build_s:.1f}s, {bytes_per_item:.0f} bytes/item", flush=True)
    value_graph = build_value_graph(index, q[0]) if args.filter_graph_share > 0 else {}
    excluded_ids = [f"item-{i}" for i in excluded]
    rows = bench_lmrec(index, x, q, truth10, truth100, truth_attr, excluded_ids, efs)
    for row in rows:
        row.update(build_s=build_s, bytes_per_item=bytes_per_item, qps_grpc=None, **value_graph)
        if value_graph:
            row["bytes_per_item_with_value_graph"] = bytes_per_item + value_graph["value_graph_bytes"] / len(x)
    if not args.no_grpc:
        grpc_rows = bench_grpc(index, q, efs, args.grpc_requests, args.grpc_concurrency)
        for row in rows:
            row.update(grpc_rows[row["ef"]])
            row["grpc_overhead_p50_ms"] = row["grpc_p50_ms"] - row["p50_ms"]
    del index
    if not args.no_faiss:
        rows += bench_faiss(x, q, truth10, truth100, truth_attr, excluded, allowed_attr, efs, args)

    report = {
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _mem_gib(), "python": platform.python_version(),
                    "note": "2 vCPUs shared with other jobs during the run",
                    "load_average_1min_start_end": [load_at_start, os.getloadavg()[0]]},
        "params": {"n": args.n, "dim": args.dim, "queries": args.queries, "m": args.m,
                   "ef_construction": args.ef_construction, "grpc_concurrency": args.grpc_concurrency,
                   "exact_scan_threshold": args.exact_scan_threshold, "filter_graph_share": args.filter_graph_share,
                   "filter_graph_m": args.filter_graph_m,
                   "label": args.label},
        "results": rows,
    }
    # One run per catalogue size: a 1M run keeps the 100k figures beside it.
    runs = []
    if args.out.exists():
        same = (args.n, args.label)
        runs = [r for r in json.loads(args.out.read_text()).get("runs", []) if (r["params"]["n"], r["params"].get("label", "")) != same]
    runs = sorted(runs + [report], key=lambda r: r["params"]["n"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f}s")


def markdown_table(report: dict) -> str:
    """The per-index, per-ef table of one run, as docs/benchmarks/retrieval.md shows it."""

    def fmt(value, digits=0):
        return "–" if value is None else f"{value:,.{digits}f}"

    def pair(r, p50, p99):
        return f"{fmt(r.get(p50), 2)} / {fmt(r.get(p99), 2)}"

    lines = [
        "| index | ef | recall@10 | recall@100 | QPS in-proc | p50 / p99 ms | 500 excluded: p50 / p99 ms "
        "| 5% attr: p50 / p99 ms | recall@10, 5% attr | QPS gRPC k=10, 8 in flight | QPS gRPC k=100 | QPS gRPC sequential "
        "| gRPC overhead p50 ms | bytes/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(" | ".join([
            f"| {r['index']}", str(r["ef"]), fmt(r["recall@10"], 3), fmt(r["recall@100"], 3), fmt(r["qps_inprocess"]),
            pair(r, "p50_ms", "p99_ms"), pair(r, "filtered_p50_ms", "filtered_p99_ms"),
            pair(r, "attr_filtered_p50_ms", "attr_filtered_p99_ms"), fmt(r["attr_filtered_recall@10"], 3),
            fmt(r.get("qps_grpc")), fmt(r.get("qps_grpc_k100")), fmt(r.get("grpc_sequential_qps")),
            fmt(r.get("grpc_overhead_p50_ms"), 2), fmt(r["bytes_per_item"]) + " |",
        ]))
    return "\n".join(lines)


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def _mem_gib() -> float:
    with open("/proc/meminfo") as f:
        return round(int(f.readline().split()[1]) / 2**20, 1)


if __name__ == "__main__":
    main()
