"""Retrieval benchmark: lmrec's hnswlib index (in process and through gRPC) against exact numpy and faiss HNSW.

    python bench/retrieval_bench.py                 # 100k items, quick
    python bench/retrieval_bench.py --n 1000000     # the 1M target run (needs ~8 GB RAM, long build)

Synthetic clustered 384-d vectors; queries are perturbed catalogue vectors. Reports, per index and ef:
build time, bytes per item (RSS delta while building), recall@10/@100 against exact search, single-query
QPS and p99 in process, QPS through gRPC (server pinned to one core, client on the other), and p99
with 500 excluded ids and with a 5% attribute filter. Writes docs/benchmarks/retrieval.json.
"""

from __future__ import annotations

import argparse
import asyncio
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


def rss_bytes() -> int:
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
    out = np.empty((len(q), k), dtype=np.int64)
    for i, query in enumerate(q):
        scores = x @ query
        if allowed is not None:
            scores[~allowed] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        out[i] = top[np.argsort(-scores[top])]
    return out


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


def p99_ms(lat: np.ndarray) -> float:
    return float(np.percentile(lat, 99) * 1e3)


# ----------------------------------------------------------------------------- lmrec index


def build_lmrec(x: np.ndarray, args) -> tuple[VectorIndex, float, float]:
    before = rss_bytes()
    index = VectorIndex(
        x.shape[1], m=args.m, ef_construction=args.ef_construction, initial_capacity=len(x),
        exact_scan_threshold=args.exact_scan_threshold, build_threads=os.cpu_count() or 1, ef_max=4096,
    )
    ids = [f"item-{i}" for i in range(len(x))]
    attrs = [{"category": [f"c{i % CATEGORIES}"]} for i in range(len(x))]
    t0 = time.perf_counter()
    for start in range(0, len(x), 20_000):
        stop = start + 20_000
        index.upsert(ids[start:stop], x[start:stop], attrs[start:stop])
    build_s = time.perf_counter() - t0
    # ids/attrs lists handed to the index are counted: the index keeps references to their strings.
    del ids, attrs
    return index, build_s, (rss_bytes() - before) / len(x)


def bench_lmrec(index: VectorIndex, x, q, truth10, truth100, truth_attr, excluded_ids, efs) -> list[dict]:
    rows = []
    label = lambda ids: [int(i.rsplit("-", 1)[1]) for i in ids]  # noqa: E731
    attr_filter = [("category", ["c3"])]
    for ef in efs:
        found10, lat = timed(lambda v: label(index.search(v, 10, ef=ef).ids), q)
        found100, _ = timed(lambda v: label(index.search(v, 100, ef=ef).ids), q)
        _, lat_ex = timed(lambda v: index.search(v, 10, exclude=excluded_ids, ef=ef), q)
        found_attr, lat_attr = timed(lambda v: label(index.search(v, 10, filters=attr_filter, ef=ef).ids), q)
        rows.append({
            "index": "lmrec-hnswlib", "ef": ef, "items": len(x),
            "recall@10": recall(found10, truth10), "recall@100": recall(found100, truth100),
            "qps_inprocess": len(q) / lat.sum(), "p50_ms": float(np.median(lat) * 1e3), "p99_ms": p99_ms(lat),
            "filtered_p99_ms": p99_ms(lat_ex), "attr_filtered_p99_ms": p99_ms(lat_attr),
            "attr_filtered_recall@10": recall(found_attr, truth_attr),
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
        found10, lat = timed(lambda v: index.search(v[None], 10, params=plain)[1][0].tolist(), q)
        found100, _ = timed(lambda v: index.search(v[None], 100, params=plain100)[1][0].tolist(), q)
        _, lat_ex = timed(lambda v: index.search(v[None], 10, params=ex), q)
        found_attr, lat_attr = timed(lambda v: index.search(v[None], 10, params=attr)[1][0].tolist(), q)
        rows.append({
            "index": "faiss-hnswflat", "ef": ef, "items": len(x),
            "recall@10": recall(found10, truth10), "recall@100": recall(found100, truth100),
            "qps_inprocess": len(q) / lat.sum(), "p50_ms": float(np.median(lat) * 1e3), "p99_ms": p99_ms(lat),
            "filtered_p99_ms": p99_ms(lat_ex), "attr_filtered_p99_ms": p99_ms(lat_attr),
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
    parser.add_argument("--exact-scan-threshold", type=int, default=4_000)
    parser.add_argument("--grpc-requests", type=int, default=2_000)
    parser.add_argument("--grpc-concurrency", type=int, default=8)
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "retrieval.json")
    args = parser.parse_args(argv)
    efs = [int(e) for e in args.efs.split(",")]

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
    excluded_ids = [f"item-{i}" for i in excluded]
    rows = bench_lmrec(index, x, q, truth10, truth100, truth_attr, excluded_ids, efs)
    for row in rows:
        row.update(build_s=build_s, bytes_per_item=bytes_per_item, qps_grpc=None)
    if not args.no_grpc:
        grpc_rows = bench_grpc(index, q, efs, args.grpc_requests, args.grpc_concurrency)
        for row in rows:
            row.update(grpc_rows[row["ef"]])
            row["grpc_overhead_p50_ms"] = row["grpc_p50_ms"] - row["p50_ms"]
    del index
    if not args.no_faiss:
        rows += bench_faiss(x, q, truth10, truth100, truth_attr, excluded, allowed_attr, efs, args)

    report = {
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _mem_gib(), "python": platform.python_version()},
        "params": {"n": args.n, "dim": args.dim, "queries": args.queries, "m": args.m,
                   "ef_construction": args.ef_construction, "grpc_concurrency": args.grpc_concurrency},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f}s")


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def _mem_gib() -> float:
    with open("/proc/meminfo") as f:
        return round(int(f.readline().split()[1]) / 2**20, 1)


if __name__ == "__main__":
    main()
