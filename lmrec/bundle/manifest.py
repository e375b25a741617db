"""The artifact manifest: what a model bundle holds, checked by every service that loads one.

A bundle is a directory with `manifest.json` next to its ONNX files and tokenizer. Training writes it;
the ranking tier refuses a bundle whose manifest is missing, of another format, or whose files do not
match their recorded checksums.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmrec.bundle.layout import VectorLayout
from lmrec.errors import ArtifactMismatch

# 2 records `vector_layout`; 1 (no layout: lmrec.bundle.Bundle derives it) is still read.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
Precision = Literal["fp32", "int8", "fp16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: str
    shape: list[int | str]


class ModelFile(_Strict):
    path: str
    sha256: str
    precision: Precision
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class EncoderSpec(_Strict):
    base_model: str
    tokenizer_dir: str
    max_length: int = Field(gt=0)
    dimension: int = Field(gt=0)
    pooling: Literal["mean", "cls"] = "mean"
    normalized: bool = True


class Manifest(_Strict):
    format_version: int
    model_version: str
    # "zero_shot": score = cosine(context, item) over LM text embeddings.
    # Trained rankers add a "ranker" role and name their kind here.
    ranker_kind: str
    encoder: EncoderSpec
    # role ("encoder", "ranker", ...) -> precision -> file
    models: dict[str, dict[Precision, ModelFile]]
    created_at: str
    data_fingerprint: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    # Extra files (item vectors, id maps, HNSW build parameters), name -> relative path.
    extra_files: dict[str, str] = Field(default_factory=dict)
    index_params: dict[str, Any] = Field(default_factory=dict)
    # None only in format 1 manifests; read it through Bundle.layout.
    vector_layout: VectorLayout | None = None

    @model_validator(mode="after")
    def _layout_fits(self) -> Manifest:
        if self.vector_layout is not None:
            why = self.vector_layout.mismatch(self.encoder.dimension, self.served_dimension)
            if why:
                raise ValueError(why)
        return self

    @property
    def served_dimension(self) -> int:
        """Length of the item and context vectors this bundle serves: the retrieval index's dimension."""
        return int(self.index_params.get("dimension", self.encoder.dimension))

    def model_file(self, role: str, precision: Precision) -> ModelFile:
        try:
            return self.models[role][precision]
        except KeyError:
            have = {r: sorted(p) for r, p in self.models.items()}
            raise ArtifactMismatch(f"bundle {self.model_version} has no {precision} '{role}' model (has {have})") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = bundle_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    # A format 1 manifest rewritten (e.g. a new model_version) keeps the shape it was read in.
    legacy = {"vector_layout"} if manifest.vector_layout is None else None
    tmp.write_text(json.dumps(manifest.model_dump(mode="json", exclude=legacy), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_manifest(bundle_dir: Path, *, verify_checksums: bool = True) -> Manifest:
    """Reads and checks a bundle's manifest.

    Raises:
        ArtifactMismatch: the manifest is missing, unreadable, of another format version, or a file it
            names is missing or has another checksum.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactMismatch(f"{bundle_dir} is not a model bundle: {MANIFEST_NAME} is missing")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactMismatch(f"{path} is not valid JSON: {exc}") from None
    if raw.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ArtifactMismatch(f"{path} has format_version {raw.get('format_version')!r}; this lmrec reads "
                               f"{' and '.join(map(str, READABLE_FORMAT_VERSIONS))}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactMismatch(f"{path} does not match the manifest schema: {exc}") from None
    if manifest.format_version >= 2 and manifest.vector_layout is None:
        raise ArtifactMismatch(f"{path}: format_version {manifest.format_version} needs a vector_layout")
    if not (bundle_dir / manifest.encoder.tokenizer_dir).is_dir():
        raise ArtifactMismatch(f"{bundle_dir}: tokenizer dir '{manifest.encoder.tokenizer_dir}' is missing")
    for role, by_precision in manifest.models.items():
        for precision, spec in by_precision.items():
            file = bundle_dir / spec.path
            if not file.is_file():
                raise ArtifactMismatch(f"{bundle_dir}: {role}/{precision} file '{spec.path}' is missing")
            if verify_checksums and sha256_of(file) != spec.sha256:
                raise ArtifactMismatch(f"{bundle_dir}: {role}/{precision} file '{spec.path}' fails its sha256 check")
    for name, rel in manifest.extra_files.items():
        if not (bundle_dir / rel).is_file():
            raise ArtifactMismatch(f"{bundle_dir}: extra file '{name}' ({rel}) is missing")
    return manifest


def peek_model_version(bundle_dir: Path) -> str | None:
    """The model version a bundle's manifest names, or None while it is missing or being replaced."""
    try:
        return json.loads((Path(bundle_dir) / MANIFEST_NAME).read_text()).get("model_version")
    except (OSError, ValueError):
        return None
