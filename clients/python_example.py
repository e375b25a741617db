"""Minimal Python client for lmrec: asks for recommendations and checks the answer.

    python clients/python_example.py --target 127.0.0.1:50051 --user-id 1 -k 10 --query "dark sci-fi thriller"

Exits 0 when the answer passes every check, 1 when the call fails or the answer is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from lmrec.v1 import common_pb2
from lmrec.v1 import gateway_service_pb2 as pb
from lmrec.v1 import gateway_service_pb2_grpc as pb_grpc


def check_recommendations(response: pb.RecommendResponse, k: int) -> list[str]:
    """Problems with a RecommendResponse; empty when it is a valid answer."""
    problems = []
    n = len(response.items)
    if response.degraded:
        # A fallback may return fewer items, never none and never more than asked.
        if not 1 <= n <= k:
            problems.append(f"degraded answer has {n} items, expected 1..{k}")
    elif n != k:
        problems.append(f"expected exactly {k} items, got {n}")
    ids = [item.item_id for item in response.items]
    if len(set(ids)) != len(ids):
        problems.append(f"duplicate item ids in {ids}")
    for i, item in enumerate(response.items):
        if not item.title.strip():
            problems.append(f"item {i} ({item.item_id}): empty title")
        if not item.reasons:
            problems.append(f"item {i} ({item.item_id}): no reason given")
        # Scores descend in a greedy list (exploration may place a lower-scored item higher).
        if response.policy == "greedy" and i and item.score > response.items[i - 1].score:
            problems.append(f"item {i} ({item.item_id}): score {item.score} above the previous one")
    if not response.model_version:
        problems.append("model_version is empty")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--user-id", default="1")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--query", default="")
    parser.add_argument("--genre", action="append", default=[], help="keep only items of this genre")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    args = parser.parse_args(argv)

    request = pb.RecommendRequest(user_id=args.user_id, k=args.k, query=args.query)
    if args.genre:
        request.filters.append(common_pb2.AttributeFilter(key="genre", values=args.genre))
    # Every call carries the bearer token (a `read` token is enough here): LMREC_TOKEN, as all our clients.
    token = os.environ.get("LMREC_TOKEN", "")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    ca = os.environ.get("LMREC_TLS_CA")  # the CA of a TLS gateway; unset: plaintext
    channel = (grpc.secure_channel(args.target, grpc.ssl_channel_credentials(open(ca, "rb").read())) if ca
               else grpc.insecure_channel(args.target))
    with channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        try:
            response = stub.Recommend(request, timeout=args.timeout, metadata=metadata)
            # Cross-check against the catalogue: every recommended item exists under the same title.
            items = stub.GetItems(pb.GetItemsRequest(item_ids=[i.item_id for i in response.items]),
                                  timeout=args.timeout, metadata=metadata) if response.items else pb.GetItemsResponse()
        except grpc.RpcError as exc:
            print(f"call failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1

    flag = f" DEGRADED ({response.degraded_reason})" if response.degraded else ""
    print(f"user {args.user_id}: model {response.model_version}, source {response.source}{flag}")
    for rank, item in enumerate(response.items, 1):
        print(f"{rank:3d}. {item.item_id:>6}  {item.score:8.4f}  {item.title}")
        for reason in item.reasons:
            print(f"{'':15}- {reason.text}")

    problems = check_recommendations(response, args.k)
    if items.missing_item_ids:
        problems.append(f"recommended items missing from the catalogue: {list(items.missing_item_ids)}")
    titles = {item.item_id: item.title for item in items.items}
    for item in response.items:
        if item.item_id in titles and titles[item.item_id] != item.title:
            problems.append(f"{item.item_id}: title {item.title!r} differs from the catalogue's "
                            f"{titles[item.item_id]!r}")
    if problems:
        print("answer failed its checks:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    print("OK: answer passed all checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
