"""Per-RPC metrics count the status the client gets: the error mapping's, an abort's, a set code's."""

from __future__ import annotations

import asyncio

import grpc
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402

from lmrec.errors import NotFound  # noqa: E402
from lmrec.grpc_server import new_server  # noqa: E402
from lmrec.rpc_metrics import RpcMetrics  # noqa: E402


async def _ok(request, context):
    return b"ok"


async def _aborted(request, context):
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")


async def _mapped(request, context):
    raise NotFound("no such item")


async def _broken(request, context):
    raise RuntimeError("bug")


async def _set_code(request, context):
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    return b""


HANDLERS = {"Ok": _ok, "Aborted": _aborted, "Mapped": _mapped, "Broken": _broken, "SetCode": _set_code}


async def _serve_and_call(registry: CollectorRegistry, calls: list[str]) -> None:
    server = new_server(rpc_metrics=RpcMetrics(registry))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Svc", {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in HANDLERS.items()})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in calls:
                try:
                    await channel.unary_unary(f"/test.Svc/{name}")(b"", timeout=5)
                except grpc.aio.AioRpcError:
                    pass
    finally:
        await server.stop(None)


def test_calls_are_counted_by_method_and_the_code_the_client_saw():
    registry = CollectorRegistry()
    asyncio.run(_serve_and_call(registry, ["Ok", "Ok", "Aborted", "Mapped", "Broken", "SetCode"]))

    def handled(method: str, code: str):
        return registry.get_sample_value("lmrec_grpc_server_handled_total",
                                         {"service": "test.Svc", "method": method, "code": code})

    assert handled("Ok", "OK") == 2
    assert handled("Aborted", "PERMISSION_DENIED") == 1
    assert handled("Mapped", "NOT_FOUND") == 1  # LmrecError mapped inside, counted outside
    assert handled("Broken", "INTERNAL") == 1
    assert handled("SetCode", "UNAVAILABLE") == 1
    assert registry.get_sample_value("lmrec_grpc_server_handling_seconds_count",
                                     {"service": "test.Svc", "method": "Ok"}) == 2
