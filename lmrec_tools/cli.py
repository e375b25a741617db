"""The `lmrec` command: serve the system, query it, load catalogues, export/train/evaluate models, load-test."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from lmrec.service_settings import GATEWAY_PORT, GATEWAY_TARGET, RANKING_PORT, RETRIEVAL_PORT
from lmrec_tools.gateway_calls import gateway_stub, print_recommendations
from lmrec_tools.serve import RAY_FLAGS, SERVICE_MAINS, cmd_serve, run_only, split_only

# recommend / catalog --------------------------------------------------------------------------
def _exploration_arg(text: str) -> tuple[str, float]:
    policy, _, value = text.partition("=")
    if policy == "greedy" and not value:
        return policy, 0.0
    try:
        if policy in ("epsilon", "softmax"):
            return policy, float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected greedy, epsilon=E or softmax=T, got {text!r}")


def cmd_recommend(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from lmrec.v1 import common_pb2, gateway_service_pb2 as gw

    filters = [common_pb2.AttributeFilter(key=k, values=vs.split("|"))
               for k, vs in (f.split("=", 1) for f in args.filter)]
    request = gw.RecommendRequest(user_id=args.user_id, k=args.k, query=args.query or "",
                                  recent_item_ids=args.recent, exclude_item_ids=args.exclude, filters=filters,
                                  scenario=args.scenario)
    if args.diversity is not None:
        request.diversity = args.diversity
    if args.explore:
        policy, value = args.explore
        request.exploration.CopyFrom(gw.Exploration(
            policy={"greedy": gw.EXPLORATION_POLICY_GREEDY, "epsilon": gw.EXPLORATION_POLICY_EPSILON,
                    "softmax": gw.EXPLORATION_POLICY_SOFTMAX}[policy],
            epsilon=value if policy == "epsilon" else 0.0, temperature=value if policy == "softmax" else 0.0))
    try:
        response = gateway_stub(args.target).Recommend(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
    else:
        print_recommendations(response, f"top {args.k} for user {args.user_id}")
    return 0


def cmd_catalog_load(args: argparse.Namespace) -> int:
    from lmrec_tools.catalog_loader import load_catalog
    from lmrec_data.datasets import load_dataset

    dataset = load_dataset(args.data)
    items, events = load_catalog(gateway_stub(args.target), dataset, with_histories=not args.items_only,
                                 progress=lambda m: print(f"\r{m}   ", end="", flush=True))
    print(f"\nloaded {items} items and {events} interactions from {dataset.name}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from lmrec_data.datasets import DOWNLOADS, download_dataset

    print(download_dataset(args.dataset, args.out or Path("data") / args.dataset))
    print(DOWNLOADS[args.dataset].terms)
    return 0


# reshard --------------------------------------------------------------------------------------
RESHARD_STEPS = {"all": ("copy", "switch", "drop"), "copy": ("copy",), "switch": ("switch",), "drop": ("drop",)}


def cmd_reshard(args: argparse.Namespace) -> int:
    import asyncio

    from lmrec.sharding import ShardMap
    from retrieval_service.reshard import ReshardError, reshard

    count = max(args.from_count, args.to_count)
    addresses = ([a.strip() for a in args.shards.split(",") if a.strip()] if args.shards
                 else [f"127.0.0.1:{RETRIEVAL_PORT + 10 * i}" for i in range(count)])
    steps = RESHARD_STEPS[args.step]
    if "switch" in steps and args.shard_map is None:
        print("nothing would tell readers about the new shards: give --shard-map FILE (readers that watch it "
              "switch), or run --step copy, give the gateway the new retrieval addresses, then --step drop",
              file=sys.stderr)
        return 2

    def switch_readers(new_map: ShardMap) -> None:
        epoch = ShardMap.load(args.shard_map).epoch + 1 if args.shard_map.is_file() else 1
        ShardMap(new_map.addresses, new_map.scheme, epoch).save(args.shard_map)

    try:
        report = asyncio.run(reshard(addresses, args.from_count, args.to_count, switch_readers=switch_readers,
                                     drain_s=args.drain_s, batch=args.batch, steps=steps,
                                     progress=lambda m: print(m, file=sys.stderr, flush=True)))
    except ReshardError as exc:
        print(f"reshard refused: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"reshard stopped: {exc.code().name}: {exc.details()}; nothing is lost, run it again",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"{report.from_placement} -> {report.to_placement}: {report.moved} of {report.items_before} items "
              f"moved ({report.moved_share:.1%}), {report.deleted_from_old} deleted from their old shards; "
              f"items per shard {report.per_shard_before} -> {report.per_shard_after}; "
              f"{report.seconds['total']:.1f}s")
        if args.step == "copy":
            print(f"now give readers the {args.to_count} shards {','.join(addresses[:args.to_count])}, "
                  f"then run with --step drop")
    return 0


def cmd_token_new(args: argparse.Namespace) -> int:
    """A fresh token for the public API: its hashed line goes into the token file (the gateway re-reads
    it), the token itself is printed once and kept nowhere."""
    import secrets

    from lmrec.auth import parse_tokens, token_hash

    token = secrets.token_urlsafe(32)
    line = f"{args.name} {args.role} {token_hash(token)}\n"
    existing = args.file.read_text(encoding="utf-8") if args.file.exists() else ""
    if any(p.name == args.name for p in parse_tokens(existing, str(args.file)).values()):
        print(f"{args.file} already has a token named {args.name}; remove its line first", file=sys.stderr)
        return 2
    args.file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line)
    print(f"added '{args.name}' ({args.role}) to {args.file}; the token (shown once):", file=sys.stderr)
    print(token)
    return 0


def cmd_impressions_export(args: argparse.Namespace) -> int:
    from gateway.impressions import export_log
    from gateway.settings import GatewaySettings
    from gateway.store import open_state

    # The gateway's own settings decide where the log is (LMREC_GATEWAY_DATABASE_URL for PostgreSQL) and
    # what counts as a click (LMREC_GATEWAY_NEGATIVE_RATING_BELOW).
    settings = GatewaySettings(state_dir=args.state_dir)
    if settings.database_url is None and not (args.state_dir / "impressions.sqlite").is_file():
        print(f"no impression log under {args.state_dir} (the gateway's --state-dir)", file=sys.stderr)
        return 2
    state = open_state(settings)
    try:
        rows = export_log(state.impressions, state.store.clicks_for, args.out)
    finally:
        state.close()
    print(f"wrote {rows} impressions to {args.out}; estimate a policy with `lmrec evaluate --ope {args.out}`")
    return 0


# wiring ---------------------------------------------------------------------------------------
def _delegate(load: Callable[[], tuple[Callable, Callable]], extra: str):
    """Subcommands whose code needs an optional extra are imported only when used; `load` imports the
    module and returns its (add arguments, run) pair."""

    def attach(sub: argparse.ArgumentParser) -> None:
        try:
            add, run = load()
        except ImportError as exc:
            sub.set_defaults(_missing=f"{exc}; install lmrec[{extra}]")
            return
        add(sub)
        sub.set_defaults(_run=run)

    return attach


def _export_encoder():
    from training.export_encoder import add_export_arguments, run_export

    return add_export_arguments, run_export


def _train():
    from training.train import add_train_arguments, run_train

    return add_train_arguments, run_train


def _encode_catalog():
    from training.encode_catalog import add_encode_arguments, run_encode

    return add_encode_arguments, run_encode


def _evaluate():
    from training.evaluate import add_evaluate_arguments, run_evaluate

    return add_evaluate_arguments, run_evaluate


def _loadtest():
    from lmrec_tools.loadtest import add_loadtest_arguments, run_loadtest

    return add_loadtest_arguments, run_loadtest


OPTIONAL = {
    "export-encoder": ("export a pretrained HF encoder as an ONNX bundle", _delegate(_export_encoder, "training")),
    "train": ("fine-tune the LM recommender and export a bundle", _delegate(_train, "training")),
    "encode-catalog": ("encode every catalogue item's served vector with a bundle, in bulk (--ray: Ray Data)",
                       _delegate(_encode_catalog, "ranking")),
    "evaluate": ("evaluate lmrec against classical recommenders", _delegate(_evaluate, "training")),
    "loadtest": ("drive load at a gateway and report latency honestly", _delegate(_loadtest, "loadtest")),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`command` names the subcommand about to run: only its optional module (maybe torch) is imported."""
    parser = argparse.ArgumentParser(prog="lmrec", description=__doc__)
    subs = parser.add_subparsers(dest="command", required=True)

    serve = subs.add_parser("serve", help="run the whole system (or one service with --only)")
    serve.add_argument("--only", choices=list(SERVICE_MAINS),
                       help="run one service in this process; every other flag goes to it (--only X --help "
                            "lists them)")
    serve.add_argument("--bundle", type=Path, default=None,
                       help="model bundle (default: the trained artifacts/lmrec-ml100k if present, else the "
                            "zero-shot artifacts/minilm-zeroshot); watched for hot swap")
    serve.add_argument("--state-dir", type=Path, default=Path("var"))
    serve.add_argument("--shards", type=int, default=1)
    serve.add_argument("--port", type=int, default=GATEWAY_PORT)
    serve.add_argument("--ranking-port", type=int, default=RANKING_PORT)
    serve.add_argument("--retrieval-port", type=int, default=RETRIEVAL_PORT, help="first shard; shard i adds 10*i")
    serve.add_argument("--metrics-port", type=int, help="the gateway's Prometheus /metrics port (default 9091, any "
                                                          "free one with --port 0; -1 = off)")
    serve.add_argument("--ranking-metrics-port", type=int, help="default 9092")
    serve.add_argument("--retrieval-metrics-port", type=int, help="first shard's; shard i adds 10*i (default 9093)")
    serve.add_argument("--otlp-endpoint", help="every service sends traces to this OTLP/gRPC collector, e.g. "
                                               "http://127.0.0.1:4317 (default: no tracing)")
    serve.add_argument("--load", choices=["if-empty", "always", "never"], default="if-empty",
                       help="load the dataset's catalogue and histories")
    serve.add_argument("--data", help="dataset directory (default $LMREC_DATA or ../shared/data/ml-100k)")
    serve.add_argument("--sample-user", default="1")
    serve.add_argument("--no-sample", action="store_true")
    ray = serve.add_argument_group("ranking on Ray Serve (lmrec[ray])")
    ray.add_argument("--ray", action="store_true",
                     help="run the ranking tier as Ray Serve replicas behind a gRPC front-end on --ranking-port")
    ray.add_argument("--autoscaling", action="store_true",
                     help="autoscale replicas on ongoing requests between --min-replicas and --max-replicas")
    for name, kind in RAY_FLAGS.items():
        ray.add_argument(f"--{name.replace('_', '-')}", type=kind)

    rs = subs.add_parser("reshard", help="change the retrieval shard count while serving (moves only the "
                                          "items that change owner; README 'Resharding')")
    rs.add_argument("--from", dest="from_count", type=int, required=True, help="shards now")
    rs.add_argument("--to", dest="to_count", type=int, required=True, help="shards after")
    rs.add_argument("--shards", help="addresses of shards 0..max(from,to)-1 in shard order, new ones started "
                                     "(default 127.0.0.1:50053+10i, where lmrec serve puts them)")
    rs.add_argument("--shard-map", type=Path, help="the readers' shard map file, rewritten at the switch")
    rs.add_argument("--step", choices=list(RESHARD_STEPS), default="all",
                    help="all; or copy, then switch readers yourself (or --step switch), then drop")
    rs.add_argument("--drain-s", type=float, default=5.0, help="wait after the switch before old shards delete")
    rs.add_argument("--batch", type=int, default=512, help="items per export page and upsert")
    rs.add_argument("--json", action="store_true")

    rec = subs.add_parser("recommend", help="ask a running gateway for recommendations")
    rec.add_argument("--target", default=GATEWAY_TARGET)
    rec.add_argument("--user-id", required=True)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--query")
    rec.add_argument("--recent", nargs="*", default=[])
    rec.add_argument("--exclude", nargs="*", default=[])
    rec.add_argument("--filter", action="append", default=[], help="key=v1|v2, e.g. genre=Animation")
    rec.add_argument("--scenario", default="", help="surface whose policy applies (the gateway's scenarios file)")
    rec.add_argument("--diversity", type=float, help="0..1, MMR re-ranking strength (default: the scenario's)")
    rec.add_argument("--explore", type=_exploration_arg, help="greedy, epsilon=E or softmax=T (default: the scenario's)")
    rec.add_argument("--timeout", type=float, default=5.0)
    rec.add_argument("--json", action="store_true")

    catalog = subs.add_parser("catalog", help="catalogue operations")
    catalog_subs = catalog.add_subparsers(dest="catalog_command", required=True)
    load = catalog_subs.add_parser("load", help="upsert a dataset's items (and histories) through the gateway")
    load.add_argument("--target", default=GATEWAY_TARGET)
    load.add_argument("--data")
    load.add_argument("--items-only", action="store_true")

    token = subs.add_parser("token", help="tokens of the public API (bearer tokens with roles)")
    token_subs = token.add_subparsers(dest="token_command", required=True)
    new_token = token_subs.add_parser("new", help="make a token, append its hash to the token file, print it once")
    new_token.add_argument("--name", required=True)
    new_token.add_argument("--role", choices=["read", "write", "admin"], required=True)
    new_token.add_argument("--file", type=Path, required=True, help="the gateway's --auth-tokens-file")

    shown = subs.add_parser("impressions", help="the gateway's impression log (exploration, off-policy evaluation)")
    shown_subs = shown.add_subparsers(dest="impressions_command", required=True)
    export = shown_subs.add_parser("export", help="write the impressions, with their clicks, as JSONL")
    export.add_argument("--state-dir", type=Path, default=Path("var/gateway"),
                        help="the gateway's state directory (with PostgreSQL: set LMREC_GATEWAY_DATABASE_URL)")
    export.add_argument("--out", type=Path, required=True)

    data = subs.add_parser("data", help="datasets")
    data_subs = data.add_subparsers(dest="data_command", required=True)
    download = data_subs.add_parser("download", help="download a dataset (checks every file's sha256)")
    download.add_argument("--dataset", choices=["ml-100k", "ml-latest-small"], default="ml-100k")
    download.add_argument("--out", type=Path, help="folder to write (default data/<dataset>)")

    for name, (help_text, attach) in OPTIONAL.items():
        sub = subs.add_parser(name, help=help_text)
        if name == command:
            attach(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    from lmrec.logging_setup import configure_logging

    configure_logging("lmrec")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    only = split_only(argv)
    if only is not None:
        if only[0] not in SERVICE_MAINS:
            parser.parse_args(["serve", "--only", only[0]])  # exits with argparse's message
        sys.exit(run_only(*only))
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"lmrec {args.command} is not available: {args._missing}", file=sys.stderr)
        sys.exit(2)
    if args.command == "serve":
        sys.exit(cmd_serve(args))
    handlers = {"recommend": cmd_recommend, "data": cmd_data_download, "impressions": cmd_impressions_export,
                "reshard": cmd_reshard, "token": cmd_token_new}
    if args.command == "catalog":
        sys.exit(cmd_catalog_load(args))
    if args.command in handlers:
        sys.exit(handlers[args.command](args))
    sys.exit(args._run(args))


if __name__ == "__main__":
    main()
