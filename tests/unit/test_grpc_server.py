"""The shared server bootstrap on a real server: malformed payloads are the caller's error, not UNKNOWN."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2

from lmrec.grpc_server import add_health_and_reflection, new_server, set_health

CHECK = "/grpc.health.v1.Health/Check"


async def _call(payload: bytes) -> tuple[grpc.StatusCode, bytes | None]:
    server = new_server()
    health = add_health_and_reflection(server, [])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await set_health(health, [], True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(CHECK)  # raw bytes out, raw bytes back
            try:
                return grpc.StatusCode.OK, await call(payload, timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details().encode()
    finally:
        await server.stop(None)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"])
def test_malformed_payload_is_invalid_argument(garbage):
    code, details = asyncio.run(_call(garbage))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert b"malformed request" in details and CHECK.encode() in details


def test_a_valid_payload_still_reaches_the_handler():
    code, reply = asyncio.run(_call(health_pb2.HealthCheckRequest(service="").SerializeToString()))
    assert code == grpc.StatusCode.OK
    assert health_pb2.HealthCheckResponse.FromString(reply).status == health_pb2.HealthCheckResponse.SERVING
