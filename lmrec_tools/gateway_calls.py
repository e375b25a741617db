"""Calling the gateway from the command line: an authenticated stub, recommendations printed."""

from __future__ import annotations


def gateway_stub(target: str, token: str | None = None):
    """A stub whose calls carry `token`, else our clients' token (lmrec/client.py)."""
    from lmrec.client import gateway_channel
    from lmrec.v1 import gateway_service_pb2_grpc as gw_grpc

    return gw_grpc.GatewayServiceStub(gateway_channel(target, token))


def print_recommendations(response, header: str) -> None:
    flag = f"  [degraded: {response.degraded_reason}]" if response.degraded else ""
    print(f"\n{header} (model {response.model_version}, {response.source}, scenario {response.scenario}, "
          f"policy {response.policy}){flag}")
    for rank, item in enumerate(response.items, 1):
        shown = f"  p={item.propensity:.3f}" if item.propensity < 1 else ""
        print(f"  {rank:2d}. {item.title:<60s} {item.score:8.4f}  (item {item.item_id}){shown}")
        for reason in item.reasons:
            print(f"        - {reason.text}")
    timings = ", ".join(f"{t.stage} {t.millis:.1f} ms" for t in response.timings)
    print(f"  stages: {timings}")
