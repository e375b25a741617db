"""A model bundle: its directory and checked manifest, travelling together from loader to every reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmrec.bundle.layout import VectorLayout, legacy_layout
from lmrec.bundle.manifest import Manifest, Precision, load_manifest
from lmrec.bundle.trained_texts import TrainedTexts, read_trained_texts
from lmrec.errors import ArtifactMismatch


@dataclass(frozen=True, repr=False)
class Bundle:
    dir: Path
    manifest: Manifest

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    @classmethod
    def load(cls, dir: Path | str, *, verify_checksums: bool = True) -> Bundle:
        """Reads and checks a bundle (lmrec.bundle.manifest.load_manifest), its vector layout included.

        Raises:
            ArtifactMismatch: the manifest or a file it names is missing or wrong, or its vector layout does
                not fit the encoder and served dimensions.
        """
        bundle = cls(Path(dir), load_manifest(Path(dir), verify_checksums=verify_checksums))
        why = bundle.layout.mismatch(bundle.manifest.encoder.dimension, bundle.manifest.served_dimension)
        if why:  # a recorded layout was checked with the schema; this catches a derived one
            raise ArtifactMismatch(f"{bundle.dir}: {why}")
        return bundle

    def __repr__(self) -> str:
        return f"Bundle({str(self.dir)!r}, {self.model_version}, {self.manifest.ranker_kind}, {self.layout!r})"

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def layout(self) -> VectorLayout:
        """How the served vectors are laid out; derived from the hyperparameters for format 1 manifests,
        written before the layout was recorded."""
        m = self.manifest
        if m.vector_layout is not None:
            return m.vector_layout
        try:
            return legacy_layout(m.ranker_kind, m.hyperparameters, m.encoder.dimension)
        except KeyError as exc:
            raise ArtifactMismatch(f"bundle {m.model_version}: hyperparameter {exc} is missing") from None

    def path(self, role: str, precision: Precision) -> Path:
        """The ONNX file of `role` at `precision`; ArtifactMismatch when the bundle has none."""
        return self.dir / self.manifest.model_file(role, precision).path

    def file(self, name: str) -> Path:
        """An extra file (item ids, id embeddings, rating head...) by its manifest name."""
        try:
            return self.dir / self.manifest.extra_files[name]
        except KeyError:
            raise ArtifactMismatch(f"bundle {self.model_version} has no extra file '{name}' "
                                   f"(has {sorted(self.manifest.extra_files)})") from None

    @property
    def tokenizer_file(self) -> Path:
        return self.dir / self.manifest.encoder.tokenizer_dir / "tokenizer.json"

    def trained_texts(self) -> TrainedTexts | None:
        """The catalogue's training-time text vectors; None for bundles without them."""
        return read_trained_texts(self.dir, self.manifest)
