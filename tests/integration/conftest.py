"""Real lmrec systems for integration tests: three (or more) processes on 127.0.0.1, ports chosen by the OS."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lmrec_tools.catalog_loader import load_catalog
from lmrec.client import gateway_channel
from lmrec_data.datasets import Dataset
from lmrec.bundle import load_manifest, write_manifest
from lmrec_tools.supervisor import ProcessGroup, SystemLayout, start_system
from lmrec.v1 import gateway_service_pb2_grpc as gw_grpc
from tests.conftest import link_bundle


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
        self.channel = gateway_channel(gateway.address)
        self.stub = gw_grpc.GatewayServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.group.stop_all()


def start(state_dir: Path, bundle_dir: Path, dataset: Dataset | None, shards: int = 1,
          **layout_options) -> RunningSystem:
    """`layout_options`: further `SystemLayout` fields (ranking_on_ray, extra_args)."""
    layout_options.setdefault("dimension", load_manifest(bundle_dir, verify_checksums=False).served_dimension)
    layout = SystemLayout(state_dir=state_dir, bundle_dir=bundle_dir, shards=shards,
                          gateway_port=0, ranking_port=0, retrieval_port=0, **layout_options)
    group = ProcessGroup(state_dir / "run")
    try:
        gateway = start_system(group, layout)
        channel = gateway_channel(gateway.address)
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

    def make(shards: int = 1, n_items: int = 300, histories: bool = True, bundle: Path | None = None,
             **layout_options) -> RunningSystem:
        """`histories=False` loads the items only (the ~47k interactions of 300 items take minutes);
        `bundle`: another bundle than the session's (e.g. a copy a test will replace)."""
        dataset = subset(ml100k, n_items)
        if not histories:
            dataset = Dataset(dataset.name, dataset.items, [])
        system = start(tmp_path / f"sys{len(systems)}", bundle or bundle_dir, dataset, shards, **layout_options)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.close()


def replace_with_new_version(watched: Path, source: Path, staging: Path) -> str:
    """Replaces the bundle at `watched` the way `lmrec train --out` does (stage, then rename) with a copy
    of `source` under a new model version: same weights, so answers stay comparable. Returns the version."""
    staged = staging / "staged"
    link_bundle(source, staged)
    manifest = load_manifest(staged)
    new_version = manifest.model_version + "-retrained"
    write_manifest(staged, manifest.model_copy(update={"model_version": new_version}))
    retired = watched.parent / f"{watched.name}.retired"
    watched.rename(retired)
    staged.rename(watched)
    shutil.rmtree(retired)
    return new_version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """One Prometheus scrape of http://127.0.0.1:port/metrics: (sample name, label items) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def metrics_scraper():
    """`free_port` and `scrape`, for tests that start services with --metrics-port. A test system's services
    serve metrics on free ports anyway: `system.group.services[name].metrics_port`."""
    return free_port, scrape
