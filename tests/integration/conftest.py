"""Real lmrec systems for integration tests: three (or more) processes on 127.0.0.1, ports chosen by the OS."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lmrec.catalog_loader import load_catalog
from lmrec.datasets import Dataset
from lmrec.supervisor import ProcessGroup, SystemLayout, start_system
from lmrec.v1 import gateway_service_pb2_grpc as gw_grpc


@dataclasses.dataclass
class RunningSystem:
    group: ProcessGroup
    layout: SystemLayout
    gateway_address: str
    channel: grpc.Channel
    stub: gw_grpc.GatewayServiceStub

    def restart(self) -> None:
        """Stops every process and starts them again on the same state directories."""
        self.channel.close()
        self.group.stop_all()
        gateway = start_system(self.group, self.layout)
        self.gateway_address = gateway.address
        self.channel = grpc.insecure_channel(gateway.address)
        self.stub = gw_grpc.GatewayServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.group.stop_all()


def start(state_dir: Path, bundle_dir: Path, dataset: Dataset | None, shards: int = 1) -> RunningSystem:
    layout = SystemLayout(state_dir=state_dir, bundle_dir=bundle_dir, shards=shards,
                          gateway_port=0, ranking_port=0, retrieval_port=0)
    group = ProcessGroup(state_dir / "run")
    try:
        gateway = start_system(group, layout)
        channel = grpc.insecure_channel(gateway.address)
        system = RunningSystem(group, layout, gateway.address, channel, gw_grpc.GatewayServiceStub(channel))
        if dataset is not None:
            load_catalog(system.stub, dataset)
    except BaseException:
        group.stop_all()
        raise
    return system


def subset(dataset: Dataset, n_items: int) -> Dataset:
    keep = {i.item_id for i in dataset.items[:n_items]}
    return Dataset(f"{dataset.name}-first{n_items}", [i for i in dataset.items if i.item_id in keep],
                   [x for x in dataset.interactions if x.item_id in keep])


@pytest.fixture(scope="session")
def lmrec_system(tmp_path_factory, bundle_dir, ml100k) -> Iterator[RunningSystem]:
    """The whole system with the full ML-100K catalogue and histories loaded through the public API."""
    system = start(tmp_path_factory.mktemp("system"), bundle_dir, ml100k)
    yield system
    system.close()


@pytest.fixture
def small_system_factory(tmp_path, bundle_dir, ml100k):
    """Throwaway systems over the first 300 ML-100K items, for tests that kill or restart processes."""
    systems: list[RunningSystem] = []

    def make(shards: int = 1, n_items: int = 300) -> RunningSystem:
        system = start(tmp_path / f"sys{len(systems)}", bundle_dir, subset(ml100k, n_items), shards)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.close()
