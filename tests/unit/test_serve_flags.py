"""`lmrec serve --only X` hands every flag to service X: each field of X's settings model is a flag, and
each one given reaches the settings X serves with (serve's own --port / --state-dir no longer swallow them)."""

from __future__ import annotations

import importlib
import os
import types
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from gateway.settings import GatewaySettings
from lmrec_tools import cli
from ranking_service.settings import RankingSettings
from retrieval_service.settings import RetrievalSettings

SERVICES = {"gateway": GatewaySettings, "ranking": RankingSettings, "retrieval": RetrievalSettings}
SERVICE_PACKAGES = {"gateway": "gateway", "ranking": "ranking_service", "retrieval": "retrieval_service"}


def _fits(info, value) -> bool:
    annotation = typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    try:
        TypeAdapter(annotation).validate_python(value)
        return True
    except ValidationError:
        return False


def flag_and_value(name: str, info, tmp_path: Path) -> tuple[list[str], object]:
    """Flag arguments setting field `name` to a valid value other than its default, and that value."""
    flag = "--" + name.replace("_", "-")
    annotation = info.annotation
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    default = info.default
    if base is bool:
        return ([f"--no-{flag[2:]}"] if default else [flag]), not default
    if typing.get_origin(base) is typing.Literal:
        value = next(v for v in typing.get_args(base) if v != default)
        return [flag, str(value)], value
    if base is Path:
        return [flag, str(tmp_path / name)], tmp_path / name
    if typing.get_origin(base) is list:
        return [flag, "a:1,b:2"], ["a:1", "b:2"]
    if base is str:
        value = info.examples[0] if info.examples else f"{name}-value"  # a field with a format shows one
        return [flag, value], value
    if base is SecretStr:  # compared by value: SecretStr's equality is its secret's
        return [flag, "postgresql://u:p@127.0.0.1:1/db"], SecretStr("postgresql://u:p@127.0.0.1:1/db")
    if base in (int, float):
        start = default if default is not None else 1
        for value in (start + 1, start + 3, start * 2, start / 2, 1, 0):
            value = base(value)
            if value != default and _fits(info, value):
                return [flag, str(value)], value
    raise AssertionError(f"no sample value for {name}: {annotation}")


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_settings_field_given_to_serve_only_reaches_the_service(service, monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("LMREC_"):
            monkeypatch.delenv(key)
    module = importlib.import_module(f"{SERVICE_PACKAGES[service]}.server")
    seen = []

    async def fake_serve(settings):
        seen.append(settings)

    monkeypatch.setattr(module, "serve", fake_serve)
    monkeypatch.setattr(module, "configure_logging", lambda name: None)
    argv, expected = [], {}
    for name, info in SERVICES[service].model_fields.items():
        flag, value = flag_and_value(name, info, tmp_path)
        argv += flag
        expected[name] = value
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--only", service, *argv])
    assert exit_.value.code == 0
    (settings,) = seen
    assert {name: getattr(settings, name) for name in expected} == expected
    # And no field kept its default: every one of them was really set by its flag.
    defaults = SERVICES[service]()
    assert all(getattr(settings, n) != getattr(defaults, n) for n in expected)


def test_the_reported_case_and_serve_flags_stay_with_serve(monkeypatch, tmp_path):
    seen = []

    async def fake_serve(settings):
        seen.append(settings)

    module = importlib.import_module("ranking_service.server")
    monkeypatch.setattr(module, "serve", fake_serve)
    monkeypatch.setattr(module, "configure_logging", lambda name: None)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--port", "6001", "--only=ranking", "--state-dir", str(tmp_path)])
    assert (seen[0].port, seen[0].state_dir) == (6001, tmp_path)
    # A flag of serve itself is not a ranking flag: the service's parser says so instead of ignoring it.
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--only", "ranking", "--shards", "2"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--only", "search"])
    assert exit_.value.code == 2


def test_split_only():
    assert cli.split_only(["serve", "--only", "gateway", "--port", "1"]) == ("gateway", ["--port", "1"])
    assert cli.split_only(["serve", "--port", "1", "--only=retrieval"]) == ("retrieval", ["--port", "1"])
    assert cli.split_only(["serve", "--port", "1"]) is None
    assert cli.split_only(["recommend", "--only", "x"]) is None
