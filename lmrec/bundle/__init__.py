"""The model bundle format, shared by training (writer) and ranking (reader): manifest, vector layout,
trained text vectors, and `Bundle`, a directory with its checked manifest."""

from lmrec.bundle.bundle import Bundle
from lmrec.bundle.layout import VectorLayout, legacy_layout
from lmrec.bundle.manifest import (FORMAT_VERSION, MANIFEST_NAME, EncoderSpec, Manifest, ModelFile, Precision,
                                   TensorSpec, load_manifest, peek_model_version, sha256_of, write_manifest)
from lmrec.bundle.trained_texts import TrainedTexts, text_hash, write_trained_texts

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Bundle", "EncoderSpec", "Manifest", "ModelFile", "Precision",
           "TensorSpec", "TrainedTexts", "VectorLayout", "legacy_layout", "load_manifest", "peek_model_version",
           "sha256_of", "text_hash", "write_manifest", "write_trained_texts"]
