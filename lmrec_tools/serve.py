"""`lmrec serve`: the whole system in supervised processes (or one service with --only), loaded and
sampled."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from lmrec_tools.gateway_calls import gateway_stub, print_recommendations

SAMPLE_QUERY = "a funny animated movie for young children"
DEFAULT_BUNDLES = (Path("artifacts/lmrec-ml100k"), Path("artifacts/minilm-zeroshot"))


def _gateway_main(argv: list[str]) -> None:
    from gateway.server import main

    main(argv)


def _ranking_main(argv: list[str]) -> None:
    from ranking_service.server import main

    main(argv)


def _retrieval_main(argv: list[str]) -> None:
    from retrieval_service.server import main

    main(argv)


# Imported when chosen: a gateway-only install has neither onnxruntime nor hnswlib.
SERVICE_MAINS = {"gateway": _gateway_main, "ranking": _ranking_main, "retrieval": _retrieval_main}


def split_only(argv: list[str]) -> tuple[str, list[str]] | None:
    """`serve --only X ...`: X and every other argument, untouched, for the service's own parser.

    serve's parser must not see them: it would keep --port, --state-dir and --bundle for itself.
    """
    if not argv or argv[0] != "serve":
        return None
    rest = argv[1:]
    for i, arg in enumerate(rest):
        if arg == "--":
            return None
        if arg == "--only" and i + 1 < len(rest):
            return rest[i + 1], rest[:i] + rest[i + 2:]
        if arg.startswith("--only="):
            return arg.split("=", 1)[1], rest[:i] + rest[i + 1:]
    return None


def run_only(service: str, service_argv: list[str]) -> int:
    SERVICE_MAINS[service](service_argv)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lmrec_data.datasets import DatasetError, load_dataset
    from lmrec.grpc_server import PARENT_PID_ENV
    from lmrec_tools.supervisor import ProcessGroup, StartupError, SystemLayout, start_system

    from lmrec.errors import ArtifactMismatch
    from lmrec.bundle import load_manifest

    args.bundle = args.bundle or next((b for b in DEFAULT_BUNDLES if (b / "manifest.json").is_file()), DEFAULT_BUNDLES[-1])
    try:
        manifest = load_manifest(args.bundle, verify_checksums=False)  # the ranking worker verifies them
    except ArtifactMismatch as exc:
        print(f"{exc}\ncreate a bundle with `lmrec train` or `lmrec export-encoder` (training extra), "
              "or run `make run`", file=sys.stderr)
        return 2
    print(f"model bundle {args.bundle}: {manifest.model_version} ({manifest.ranker_kind})", flush=True)
    # The services die with this command, however it dies (lmrec/grpc_server.die_with_parent).
    group = ProcessGroup(args.state_dir / "run", env={PARENT_PID_ENV: str(os.getpid())})
    layout = SystemLayout(state_dir=args.state_dir, bundle_dir=args.bundle, shards=args.shards,
                          dimension=manifest.served_dimension,
                          gateway_port=args.port, ranking_port=args.ranking_port, retrieval_port=args.retrieval_port,
                          gateway_metrics_port=args.metrics_port, ranking_metrics_port=args.ranking_metrics_port,
                          retrieval_metrics_port=args.retrieval_metrics_port, otlp_endpoint=args.otlp_endpoint,
                          ranking_on_ray=args.ray, extra_args={"ranking": _ray_flags(args) if args.ray else []})
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        ranking = "the ranking tier on Ray Serve" if args.ray else "the ranking worker"
        print(f"starting {args.shards} retrieval shard(s), {ranking} and the gateway ...", flush=True)
        gateway = start_system(group, layout)
        token = _announce_token(args.state_dir / "gateway" / "tokens" / "admin.token")
        stub = gateway_stub(gateway.address, token)
        if args.load != "never":
            _load_if_needed(stub, args, load_dataset, DatasetError)
        for name, svc in group.services.items():
            metrics = f"metrics :{svc.metrics_port}" if svc.metrics_port is not None else "metrics off"
            print(f"  {name:<12s} {svc.address}  {metrics}  (pid {svc.process.pid}, log {svc.log_path})")
        if not args.no_sample:
            _print_samples(stub, args.sample_user)
        print(f"\nlmrec is serving on {gateway.address}. Ctrl-C stops it.", flush=True)
        while not stopping:
            for name, svc in group.services.items():
                if svc.process.poll() is not None:
                    print(f"{name} exited with {svc.process.returncode}; see {svc.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    except StartupError as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        group.stop_all()


def _announce_token(generated: Path) -> str | None:
    """The token this command calls the gateway with: LMREC_TOKEN's, else the admin token the gateway
    generated (no tokens configured), which is also said, so that other clients can use it."""
    from lmrec.client import token_from_env

    if (token := token_from_env(local_fallback=False)) is not None:
        return token
    if generated.is_file():
        print(f"admin token (generated; no tokens configured): {generated}\n"
              f"  clients: export LMREC_TOKEN=$(cat {generated})", flush=True)
        return generated.read_text().strip()
    return None


# Flags of `python -m ranking_service.ray_serve` that `lmrec serve --ray` passes on when given.
RAY_FLAGS = {"ray_address": str, "ray_num_cpus": int, "num_replicas": int, "min_replicas": int, "max_replicas": int,
             "target_ongoing_requests": float, "replica_num_cpus": float, "replica_num_gpus": float}


def _ray_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--autoscaling"] if args.autoscaling else []
    for name in RAY_FLAGS:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def _load_if_needed(stub, args, load_dataset, DatasetError) -> None:
    from lmrec_tools.catalog_loader import load_catalog
    from lmrec.v1 import gateway_service_pb2 as gw

    if args.load == "if-empty":
        probe = stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=args.sample_user), timeout=10)
        if probe.events:
            print("catalogue and histories already loaded (state kept across restarts)")
            return
    try:
        dataset = load_dataset(args.data)
    except DatasetError as exc:
        print(f"not loading data: {exc}", file=sys.stderr)
        return
    started = time.monotonic()
    items, events = load_catalog(stub, dataset, progress=lambda m: print(f"\r  loading {m}   ", end="", flush=True))
    print(f"\nloaded {items} items and {events} interactions from {dataset.name} in {time.monotonic() - started:.1f}s")


def _print_samples(stub, user_id: str) -> None:
    from lmrec.v1 import gateway_service_pb2 as gw

    print_recommendations(stub.Recommend(gw.RecommendRequest(user_id=user_id, k=10), timeout=10),
                          f"top 10 for user {user_id}")
    print_recommendations(stub.Recommend(gw.RecommendRequest(user_id=user_id, k=10, query=SAMPLE_QUERY), timeout=10),
                          f"top 10 for user {user_id} asking '{SAMPLE_QUERY}'")
