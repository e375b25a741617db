"""The served encoder graph for BERT-family models: the same weights and maths as `PooledEncoder`, with
every token-wise step run on the real tokens of the batch only.

A batch of short texts is mostly padding (ML-100K item texts: 15 real tokens in a 32-token bucket), and a
stock HF graph runs its projections, feed-forward layers and LayerNorms over every padded slot. Here the
batch is packed to its real tokens ([T, hidden]) for those steps and expanded to [batch, length] only
for attention, which needs the sequence layout; the result is the masked-mean-pooled, L2-normalised
vector of `PooledEncoder`, equal up to float rounding (`tests/unit/test_packed_encoder.py`). The packing
is the "remove padding" of FasterTransformer and ONNX Runtime's CUDA attention, written in plain ops so
it exports to one ONNX graph with dynamic batch and length and quantises like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Large enough to zero a masked key after softmax, small enough to stay finite in the FP16 variant.
_MASKED = -65504.0


def supports_packing(encoder: nn.Module) -> bool:
    """BERT-layout encoders with absolute positions; anything else is exported as the stock HF graph."""
    config = getattr(encoder, "config", None)
    return (config is not None and config.model_type == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False))


class PackedEncoder(nn.Module):
    """Token ids + attention mask -> unit mean-pooled vector, padding skipped outside attention."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        if not supports_packing(bert):
            raise ValueError(f"PackedEncoder needs a BERT encoder with absolute positions, got "
                             f"{getattr(getattr(bert, 'config', None), 'model_type', type(bert).__name__)}")
        self.bert = bert
        self.heads = bert.config.num_attention_heads
        self.head_dim = bert.config.hidden_size // self.heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            # Fine-tuning runs the HF model itself; this graph leaves out its dropout layers.
            raise RuntimeError("PackedEncoder is an inference graph (no dropout): call .eval() first")
        batch, length = input_ids.shape
        hidden = self.bert.config.hidden_size
        real = attention_mask.reshape(-1) > 0
        keep = torch.nonzero(real).squeeze(1)
        # Row of each [batch * length] slot in the packed tensor with a zero row prepended: real tokens
        # at 1..T in order, padding at 0, so expanding is one gather and padded slots come back as zeros.
        slot = torch.cumsum(real.to(torch.int64), 0) * real.to(torch.int64)

        emb = self.bert.embeddings
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0).expand(batch, length).reshape(-1)
        x = (emb.word_embeddings(input_ids.reshape(-1)[keep]) + emb.position_embeddings(positions[keep])
             + emb.token_type_embeddings.weight[0])
        x = emb.LayerNorm(x)
        zero = x.new_zeros(1, hidden)

        def expand(packed: torch.Tensor) -> torch.Tensor:
            return torch.cat([zero, packed], 0)[slot].reshape(batch, length, hidden)

        def heads(packed: torch.Tensor) -> torch.Tensor:
            return expand(packed).reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)

        key_bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * _MASKED
        scale = 1.0 / math.sqrt(self.head_dim)
        for layer in self.bert.encoder.layer:
            attention = layer.attention
            q, k, v = heads(attention.self.query(x)), heads(attention.self.key(x)), heads(attention.self.value(x))
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + key_bias, dim=-1)
            context = torch.matmul(probs, v).transpose(1, 2).reshape(batch * length, hidden)[keep]
            x = attention.output.LayerNorm(attention.output.dense(context) + x)
            inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dense(inner) + x)

        pooled = expand(x).sum(1) / attention_mask.sum(1, keepdim=True).to(x.dtype).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)
