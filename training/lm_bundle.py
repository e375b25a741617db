"""Exports a trained LM recommender as a serving bundle, checking every exported graph on the way.

The bundle holds, besides manifest.json:
  * encoder.{onnx,int8.onnx,fp16.onnx} + tokenizer/: the fine-tuned LM (token ids -> unit text vector);
  * item_tower.{onnx,fp16.onnx} and context.{onnx,fp16.onnx}: see ranking_service/seq_ranker.py; the
    INT8 (CPU) runtime serves their FP32 graphs (_export_tower says why);
  * item_ids.json + id_embeddings.npy: the collaborative part of the items seen in training;
  * item_vectors.npy + catalogue_ids.json: the served vector of every catalogue item at training time
    (FP32), for bulk index builds and offline checks; index_params: the HNSW build parameters;
  * text_embeddings.npy + text_hashes.json: every catalogue item's FP32 LM text vector keyed by id and
    text hash, served instead of re-encoding unchanged items (lmrec/bundle/trained_texts.py);
  * hf_model/: the fine-tuned encoder in HF format (PyTorch baselines and benchmarks; not served).
Parity recorded in the manifest: each ONNX graph against PyTorch, and INT8 / FP16 against FP32 as
scores and as NDCG@10 over whole-catalogue rankings.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmrec.bundle import (FORMAT_VERSION, Bundle, EncoderSpec, Manifest, VectorLayout, write_manifest,
                          write_trained_texts)
from training.export_encoder import export_encoder_files, save_tokenizer
from training.lm_model import ContextModel, ItemTower, ScenarioContextModel
from training.lm_scores import BundleScorer, torch_scores
from training.metrics import phase_ndcg10
from training.onnx_export import convert_fp16, describe, export_module

log = logging.getLogger(__name__)

PARITY_USERS = 300
INDEX_PARAMS = {"space": "cosine", "m": 16, "ef_construction": 200, "ef_search": 128}


def _export_tower(module: torch.nn.Module, example: tuple, out: Path, role: str, input_names: list[str],
                  output_name: str, dynamic_axes: dict) -> dict:
    """FP32 and FP16 graphs of a small tower; its INT8 entry names the FP32 graph.

    INT8 is for the text encoder, where the time goes: on these 64-wide towers it saved next to nothing
    and was the only INT8 error left in trained items' rankings (docs/tuning.md#int8-towers).
    """
    fp32, fp16 = out / f"{role}.onnx", out / f"{role}.fp16.onnx"
    export_module(module, example, fp32, input_names, [output_name], dynamic_axes)
    convert_fp16(fp32, fp16)
    described = describe(fp32, out, "fp32")
    return {"fp32": described, "int8": described, "fp16": describe(fp16, out, "fp16")}


def _graph_parity(path: Path, feeds: dict[str, np.ndarray], reference: np.ndarray) -> float:
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float(np.abs(got - reference).max())


def _ranking_parity(trained, data, out: Path) -> dict:
    """NDCG@10 of whole-catalogue rankings by PyTorch and by each ONNX precision, on the same users.

    Uses validation targets with validation histories. The test-phase model has trained on those
    targets, so the NDCG values are inflated: they measure agreement between precisions, not quality.
    Catalogue items are served with their training-time FP32 text vectors, so each precision is also
    checked with every item text re-encoded by its own encoder (`reencoded_*`: the path of items
    upserted after training, and the only place the INT8 encoder touches item vectors).
    """
    users = data.eval_users("validation")[:PARITY_USERS]
    if not len(users):
        return {"users": 0, "skipped": "the data has no validation targets to rank"}
    seqs = data.history_sequences("validation")
    # A scenario-aware bundle is checked through its scenario input: each user in the target's scenario.
    scenarios = data.item_scenario_ids()[data.targets("validation")[users]] if trained.net.gate is not None else None

    def ndcg(scores: np.ndarray) -> float:
        return float(phase_ndcg10(scores, data, "validation", users).mean())

    reference = torch_scores(trained, [seqs[u] for u in users], scenarios)
    result = {"users": int(len(users)), "torch_ndcg@10": ndcg(reference.copy())}
    fp32_scores = None
    for precision in trained.config.parity_precisions:
        try:
            scores = BundleScorer(out, precision, data, "validation", graphs_only=True).score(users, scenarios)
        except Exception as exc:  # noqa: BLE001 - FP16 kernels are missing on some CPU builds; say so
            result[f"{precision}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        if precision == "fp32":
            fp32_scores = scores
        result[f"{precision}_ndcg@10"] = ndcg(scores.copy())
        result[f"{precision}_vs_torch_max_abs_score_diff"] = float(np.abs(scores - reference).max())
        if fp32_scores is not None and precision != "fp32":
            result[f"{precision}_vs_fp32_max_abs_score_diff"] = float(np.abs(scores - fp32_scores).max())
            result[f"{precision}_vs_fp32_ndcg_rel_diff"] = _relative(result, f"{precision}_ndcg@10", "fp32_ndcg@10")
        if precision != "fp16":  # FP16 is emulated on a CPU: re-encoding the catalogue would take minutes
            reencoded = BundleScorer(out, precision, data, "validation", reencode=True,
                                     graphs_only=True).score(users, scenarios)
            result[f"reencoded_{precision}_ndcg@10"] = ndcg(reencoded)
    if "reencoded_int8_ndcg@10" in result and "reencoded_fp32_ndcg@10" in result:
        result["reencoded_int8_vs_fp32_ndcg_rel_diff"] = _relative(result, "reencoded_int8_ndcg@10",
                                                                   "reencoded_fp32_ndcg@10")
    return result


def _relative(result: dict, key: str, base_key: str) -> float:
    base = result[base_key]
    return (result[key] - base) / base if base else 0.0


def export_bundle(trained, data, out_dir: Path, training_data: str = "holdout",
                  validation_split=None, extend: Callable[[Bundle], Manifest] | None = None) -> Path:
    """Writes the bundle next to `out_dir`, then swaps it in with renames, so a ranking worker watching
    `out_dir` never loads a half-written bundle.

    Args:
        training_data: "holdout" (fitted on `data`'s train + validation: an evaluation bundle for that
            split) or "all" (fitted on every interaction: a production bundle, never to be scored).
        validation_split: the split config of the validation fit that chose the epochs, when it is not
            `data`'s own (production bundles); recorded in the manifest.
        extend: adds to the staged bundle before it is swapped in (e.g. the rating head,
            training/rating_export.py): called with the staged bundle, returns the manifest to write.
    """
    if training_data not in ("holdout", "all"):
        raise ValueError(f"training_data must be 'holdout' or 'all', got {training_data!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    config, lm, net = trained.config, trained.lm, trained.net.eval()
    text_dim, dim = lm.text.shape[1], config.dim

    save_tokenizer(lm.tokenizer, tmp / "tokenizer")
    lm.pooled.encoder.save_pretrained(str(tmp / "hf_model"))
    lm.tokenizer.save_pretrained(str(tmp / "hf_model"))
    encoder = export_encoder_files(lm.pooled, lm.tokenizer, tmp, config.max_length)

    text = torch.from_numpy(lm.text[:8].copy())
    ids = torch.randn(len(text), dim) * 0.1
    ids[0] = 0.0  # a text-only item, so parity covers the cold-item flag too
    with torch.no_grad():
        norms = net.item_vectors().norm(dim=-1).numpy()
    # M² is the largest |e|² + f² (f = 1 for text-only items): see ItemTower.
    max_norm = float(np.sqrt((norms ** 2 + (~trained.known)).max()))
    # The query channel's weight is relative to the collaborative scores' scale (|e| for raw heads).
    query_scale = 1.0 if config.unit else float(norms[trained.known].mean())
    item_tower = ItemTower(net.head, None if config.unit else max_norm).eval()
    item_files = _export_tower(item_tower, (text, ids), tmp, "item_tower", ["text_embedding", "id_embedding"],
                                  "item_vector", {"text_embedding": {0: "batch"}, "id_embedding": {0: "batch"},
                                                  "item_vector": {0: "batch"}})
    history = torch.randn(3, 7, dim)
    mask = torch.ones(3, 7)
    mask[0, :4] = 0
    context_axes = {"history": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"}, "context": {0: "batch"}}
    if net.gate is None:
        context, context_inputs = ContextModel(net.tower).eval(), (history, mask)
        context_files = _export_tower(context, context_inputs, tmp, "context", ["history", "mask"], "context",
                                      context_axes)
    else:
        # Every scenario index, 0 (none) included, so parity covers each gate row.
        scenario = torch.arange(len(history)) % (net.gate.gain.num_embeddings)
        context, context_inputs = ScenarioContextModel(net.tower, net.gate).eval(), (history, mask, scenario)
        context_files = _export_tower(context, context_inputs, tmp, "context", ["history", "mask", "scenario"],
                                      "context", {**context_axes, "scenario": {0: "batch"}})
    with torch.no_grad():
        item_ref = item_tower(text, ids).numpy()
        context_ref = context(*context_inputs).numpy()
        id_table = (net.ids * net.known[:, None]).numpy()
        served = item_tower(torch.from_numpy(lm.text), torch.from_numpy(id_table)).numpy()
    parity = {f"encoder_{k}": v for k, v in encoder["parity"].items()}
    parity["item_tower_fp32_vs_torch_max_abs"] = _graph_parity(tmp / "item_tower.onnx", {
        "text_embedding": text.numpy(), "id_embedding": ids.numpy()}, item_ref)
    parity["context_fp32_vs_torch_max_abs"] = _graph_parity(tmp / "context.onnx", dict(zip(
        ("history", "mask", "scenario"), (t.numpy() for t in context_inputs))), context_ref)

    known = np.flatnonzero(trained.known)
    (tmp / "item_ids.json").write_text(json.dumps([data.item_ids[i] for i in known]))
    np.save(tmp / "id_embeddings.npy", id_table[known].astype(np.float32))
    (tmp / "catalogue_ids.json").write_text(json.dumps(list(data.item_ids)))
    np.save(tmp / "item_vectors.npy", served.astype(np.float32))
    trained_texts = write_trained_texts(tmp, list(data.item_ids), list(data.item_texts), lm.text)

    now = dt.datetime.now(dt.timezone.utc)
    name = Path(config.model or "all-MiniLM-L6-v2").name
    hyper = config.as_dict()
    hyper.update({"epochs": trained.epochs, "fit_phase": trained.phase, "lm_source": lm.source,
                  "split": (validation_split or data.config).as_dict(), "training_data": training_data,
                  "query_scale": query_scale, "max_norm": max_norm,
                  "scenarios": data.scenario_names if net.gate is not None else []})
    if not config.unit:
        hyper.update({"cold_bias": trained.cold_bias, "cold_calibration": trained.cold_calibration})
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=f"lmrec-{name}-{data.dataset_name}-{now:%Y%m%d%H%M%S}",
        ranker_kind="lm_seq",
        encoder=EncoderSpec(base_model=config.model or "all-MiniLM-L6-v2", tokenizer_dir="tokenizer",
                            max_length=config.max_length, dimension=int(text_dim), pooling="mean", normalized=True),
        models={"encoder": encoder["files"], "item_tower": item_files, "context": context_files},
        created_at=now.isoformat(),
        data_fingerprint=data.fingerprint,
        hyperparameters=hyper,
        metrics={"lm_finetune": lm.stats, "validation_curve": trained.curve, "train_seconds": trained.seconds,
                 "known_items": int(len(known)), "catalogue_items": int(data.n_items)},
        parity=parity,
        extra_files={"item_ids": "item_ids.json", "id_embeddings": "id_embeddings.npy",
                     "item_vectors": "item_vectors.npy", "catalogue_ids": "catalogue_ids.json", **trained_texts},
        index_params={"dimension": int(served.shape[1]), **INDEX_PARAMS},
        # ItemTower's output: raw heads add its text-only flag and norm pad; the manifest checks the sum.
        vector_layout=VectorLayout(collaborative=dim, text=int(text_dim),
                                   trailing=() if config.unit else ("text_only", "norm_pad")),
    )
    write_manifest(tmp, manifest)
    ranking = _ranking_parity(trained, data, tmp)
    manifest = manifest.model_copy(update={"parity": {**parity, "ranking": ranking}})
    write_manifest(tmp, manifest)
    if extend is not None:
        manifest = extend(Bundle(tmp, manifest))
        write_manifest(tmp, manifest)
    log.info("bundle %s parity: %s", manifest.model_version, manifest.parity)
    _swap_in(tmp, out_dir)
    return out_dir


def _swap_in(tmp: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
