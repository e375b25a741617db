"""Shared test fixtures: the model bundle and the MovieLens data (skip locally when absent, fail under CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lmrec_data.datasets import Dataset, DatasetError, load_dataset, resolve_data_path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO / "artifacts" / "minilm-zeroshot"


def link_bundle(source: Path, dest: Path) -> Path:
    """A bundle copy whose model files are hard links to the source's (a full copy is ~200 MB, and the
    suite makes several). Files under 1 MiB (manifest, tokenizer) are real copies, so a test may rewrite
    them; a test that changes a model file must replace it (unlink, write), never write into it."""
    def copy(src: str, dst: str) -> None:
        if os.path.getsize(src) >= 1 << 20:
            try:
                os.link(src, dst)
                return
            except OSError:  # another file system, or links not allowed: fall back to a copy
                pass
        shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=copy)
    return dest


def require_data() -> Dataset:
    path = resolve_data_path()
    try:
        return load_dataset(path)
    except DatasetError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but MovieLens-100K is not readable at {path}: {exc}")
        pytest.skip(f"MovieLens-100K not found at {path} (set LMREC_DATA or run `lmrec data download`)")


@pytest.fixture(scope="session")
def ml100k() -> Dataset:
    return require_data()


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """The zero-shot MiniLM bundle: the one `make run` exports if valid, else a fresh export."""
    from lmrec.errors import ArtifactMismatch
    from lmrec.bundle import load_manifest

    try:
        load_manifest(DEFAULT_BUNDLE)
        return DEFAULT_BUNDLE
    except ArtifactMismatch:
        pass
    pytest.importorskip("torch", reason="exporting the encoder needs the training extra")
    from training.export_encoder import export_pretrained_bundle

    return export_pretrained_bundle(None, tmp_path_factory.mktemp("bundle") / "minilm-zeroshot")


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (tests/postgres_server.py); each test makes its own
    database. Its directory is not under pytest's temp root, which only root may enter: the server runs
    as the `postgres` user when the tests run as root."""
    import tempfile

    from tests.postgres_server import start_postgres

    root = Path(tempfile.mkdtemp(prefix="lmrec-pg-"))
    server = start_postgres(root)
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


# Every gateway the tests start accepts this session's admin token, and every client of ours
# (lmrec/client.py, the Node and Go clients) sends it: the suite runs with authentication on.
from lmrec.auth import local_token_env  # noqa: E402

os.environ.update(local_token_env("tests"))
