"""Exports an HF text encoder as an lmrec model bundle: ONNX FP32, INT8 and FP16, tokenizer, manifest.

The exported graph includes mean pooling and L2 normalisation, so one ONNX call maps token ids to the
unit vectors the services use; ranking needs nothing from torch or transformers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from lmrec.bundle import FORMAT_VERSION, EncoderSpec, Manifest, VectorLayout, write_manifest
from training.lm_source import DEFAULT_MODEL, resolve_model_dir
from training.onnx_export import convert_fp16, describe, export_module, quantize_int8
from training.packed_encoder import PackedEncoder, supports_packing

log = logging.getLogger(__name__)

PARITY_TEXTS = [
    "Toy Story (1995) Genres: Animation, Children's, Comedy.",
    "a funny animated movie for young children",
    "dark science fiction thriller set in space",
    "Pulp Fiction (1994) Genres: Crime, Drama.",
    "romantic comedy in Paris",
    "war film",
]


class PooledEncoder(torch.nn.Module):
    """HF encoder + attention-masked mean pooling + L2 normalisation."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def load_pooled_encoder(model: str | None) -> tuple[PooledEncoder, object, str]:
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model_dir(model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = AutoModel.from_pretrained(source)
    return PooledEncoder(encoder).eval(), tokenizer, source


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    """Saves the fast tokenizer's files; the serving side reads tokenizer.json with `tokenizers`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / "tokenizer.json").is_file():
        raise RuntimeError(f"{out_dir}: the tokenizer is not a fast tokenizer (no tokenizer.json)")


def export_encoder_files(pooled: PooledEncoder, tokenizer, bundle_dir: Path, max_length: int,
                         prefix: str = "encoder") -> dict:
    """Writes <prefix>.onnx / .int8.onnx / .fp16.onnx; returns the manifest's `models` entry and parity.

    BERT-family encoders are exported as `PackedEncoder` (padding skipped outside attention, about 2x
    the stock graph's throughput on short texts); parity is always checked against the HF model itself.
    """
    batch = tokenizer(PARITY_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    fp32 = bundle_dir / f"{prefix}.onnx"
    packed = supports_packing(pooled.encoder)
    export_module(
        PackedEncoder(pooled.encoder) if packed else pooled,
        (batch["input_ids"], batch["attention_mask"]),
        fp32,
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "embedding": {0: "batch"}},
    )
    int8 = bundle_dir / f"{prefix}.int8.onnx"
    fp16 = bundle_dir / f"{prefix}.fp16.onnx"
    quantize_int8(fp32, int8)
    convert_fp16(fp32, fp16)
    with torch.no_grad():
        reference = pooled(batch["input_ids"], batch["attention_mask"]).numpy()
    parity = {"graph": "packed" if packed else "hf", **encoder_parity(reference, batch, {"fp32": fp32, "int8": int8})}
    files = {p: describe(f, bundle_dir, p) for p, f in (("fp32", fp32), ("int8", int8), ("fp16", fp16))}
    return {"files": files, "parity": parity}


def encoder_parity(reference: np.ndarray, batch, paths: dict[str, Path]) -> dict:
    """Cosine of each ONNX variant's embeddings against PyTorch on the same inputs (FP16 needs CUDA; not run here)."""
    import onnxruntime as ort

    feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
    out = {}
    for precision, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, feeds)[0]
        cos = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        out[f"{precision}_vs_torch_min_cosine"] = float(cos.min())
    return out


def export_pretrained_bundle(model: str | None, out_dir: Path, max_length: int = 128) -> Path:
    """Builds a zero-shot bundle: score(context, item) = cosine of their LM embeddings."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    pooled, tokenizer, source = load_pooled_encoder(model)
    save_tokenizer(tokenizer, out_dir / "tokenizer")
    exported = export_encoder_files(pooled, tokenizer, out_dir, max_length)
    dimension = int(pooled.encoder.config.hidden_size)
    name = model or DEFAULT_MODEL
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=f"{Path(name).name}-zeroshot-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}",
        ranker_kind="zero_shot",
        encoder=EncoderSpec(base_model=name, tokenizer_dir="tokenizer", max_length=max_length,
                            dimension=dimension, pooling="mean", normalized=True),
        models={"encoder": exported["files"]},
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        hyperparameters={"source": source, "max_length": max_length},
        parity=exported["parity"],
        vector_layout=VectorLayout(collaborative=0, text=dimension),
    )
    write_manifest(out_dir, manifest)
    log.info("exported %s to %s (parity %s)", name, out_dir, exported["parity"])
    return out_dir


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="HF model folder or name (default: bundled MiniLM)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/minilm-zeroshot"))
    parser.add_argument("--max-length", type=int, default=128)


def run_export(args: argparse.Namespace) -> int:
    path = export_pretrained_bundle(args.model, args.out, args.max_length)
    print(path)
    return 0
