"""`run_service`, the one lifecycle of every service process: serving and healthy once built, background
work cancelled and everything closed in reverse order of opening on SIGTERM, and a build that fails
half-way closes what it had opened."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lmrec.service import Running, ServiceSpec, listen, run_service
from lmrec.service_settings import ServingSettings

pytestmark = pytest.mark.timeout(60)
SERVICE = "lmrec.test.Nothing"


def settings(tmp_path) -> ServingSettings:
    return ServingSettings(port=0, port_file=tmp_path / "port", metrics_port_file=tmp_path / "metrics")


class Metrics:
    def __init__(self, registry) -> None:
        self.rpc = None


async def wait_for(path, timeout_s: float = 20.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not path.exists():
        assert asyncio.get_running_loop().time() < deadline, f"{path} never written"
        await asyncio.sleep(0.02)
    return path.read_text()


def test_serves_healthy_then_stops_background_and_closes_in_reverse_on_sigterm(tmp_path):
    events: list[str] = []
    config = settings(tmp_path).model_copy(update={"metrics_port": 0})

    async def background() -> None:
        events.append("background started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("background cancelled")
            raise

    async def build(metrics, resources: AsyncExitStack) -> Running:
        assert isinstance(metrics, Metrics)  # metrics on: built before the service, for it to use
        resources.callback(events.append, "first opened, closed last")

        async def close_second() -> None:
            events.append("second opened, closed first")

        resources.push_async_callback(close_second)
        return Running(listen(config, [SERVICE], lambda server: None, "test"), "nothing", [background()])

    async def scenario() -> None:
        task = asyncio.create_task(run_service(config, ServiceSpec("test", Metrics), build))
        port = await wait_for(config.port_file)
        assert (await wait_for(config.metrics_port_file)).isdigit()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert events == ["background started"]
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 20)

    asyncio.run(scenario())
    assert events == ["background started", "background cancelled", "second opened, closed first",
                      "first opened, closed last"]


def test_a_build_failing_half_way_closes_what_it_opened_and_never_serves(tmp_path):
    closed: list[str] = []
    config = settings(tmp_path).model_copy(update={"metrics_port": -1})

    async def build(metrics, resources: AsyncExitStack) -> Running:
        assert metrics is None  # metrics off
        resources.callback(closed.append, "state")
        raise SystemExit("invalid settings\nretrieval_shard_map: no such file")

    with pytest.raises(SystemExit, match="retrieval_shard_map"):
        asyncio.run(run_service(config, ServiceSpec("test", Metrics), build))
    assert closed == ["state"]
    assert not config.port_file.exists()
