"""The packed encoder graph computes what the HF model computes, in PyTorch and once exported to ONNX."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the encoder export needs the training extra")
transformers = pytest.importorskip("transformers", reason="the encoder export needs the training extra")

from training.export_encoder import PooledEncoder  # noqa: E402
from training.onnx_export import export_module, quantize_int8  # noqa: E402
from training.packed_encoder import PackedEncoder, supports_packing  # noqa: E402


def tiny_bert(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def ragged_batch(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with the given real lengths, right-padded with 0 to `width`, as the worker's tokenizer pads."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, 120, size=n)
        mask[row, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def test_packed_equals_the_hf_model_on_ragged_batches():
    bert = tiny_bert()
    stock, packed = PooledEncoder(bert).eval(), PackedEncoder(bert).eval()
    for lengths, width in (([1], 1), ([3, 16, 1, 7], 16), ([5] * 6, 32), ([32, 2], 32)):
        ids, mask = ragged_batch(lengths, width)
        with torch.no_grad():
            want, got = stock(ids, mask), packed(ids, mask)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6)


def test_packed_onnx_graph_keeps_dynamic_batch_and_length(tmp_path):
    import onnxruntime as ort

    bert = tiny_bert(1)
    stock, packed = PooledEncoder(bert).eval(), PackedEncoder(bert).eval()
    fp32, int8 = tmp_path / "encoder.onnx", tmp_path / "encoder.int8.onnx"
    export_module(packed, ragged_batch([4, 2], 8), fp32, ["input_ids", "attention_mask"], ["embedding"],
                  {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                   "embedding": {0: "batch"}})
    quantize_int8(fp32, int8)
    sessions = {p: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for p, f in (("fp32", fp32), ("int8", int8))}
    # Shapes and padding amounts other than the traced example's: more real tokens than it had, a full row.
    for lengths, width in (([9, 30, 1, 17, 32], 32), ([1], 16), ([6] * 3, 6)):
        ids, mask = ragged_batch(lengths, width, seed=width)
        with torch.no_grad():
            want = stock(ids, mask).numpy()
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        np.testing.assert_allclose(sessions["fp32"].run(None, feeds)[0], want, atol=2e-5)
        assert np.sum(sessions["int8"].run(None, feeds)[0] * want, axis=1).min() > 0.95


def test_packed_refuses_training_mode():
    packed = PackedEncoder(tiny_bert()).train()
    with pytest.raises(RuntimeError, match="eval"):
        packed(*ragged_batch([2], 2))


def test_only_bert_layouts_are_packed():
    assert supports_packing(tiny_bert())
    roberta = transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    assert not supports_packing(roberta)
    with pytest.raises(ValueError, match="roberta"):
        PackedEncoder(roberta)
