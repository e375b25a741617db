"""The LM recommender's PyTorch modules: item tower, user (sequence) tower, and the training net.

Serving layout (what the ONNX exports compute and the ranking tier stores), for the default raw heads:
  * item vector  = [e ; t ; f ; pad] where t is the item text's unit LM embedding, e = MLP(t) +
                   id_embedding the collaborative part (id_embedding = 0 for items the model never saw in
                   training: new and cold items ride on text alone), f = 1 for such text-only items, and
                   pad equalises norms (see ItemTower);
  * context      = [ĥ ; β·q ; b ; 0] where ĥ is the unit output of a causal transformer over the
                   history's e, q the unit LM embedding of the free-text request (0 when there is none)
                   and b the calibrated cold-item bias (training/cold_calibration.py).
So score = ĥ·e + β·q·t + b·f: one dot product, the context encoded once per request and every candidate's
vector computed at upsert time. Every item vector has the same norm, so a cosine HNSW index returns
exactly the inner-product order. (Unit heads, kept for comparison, serve [ê ; t] with ê = e/|e|.)

Plain attention ops instead of nn.TransformerEncoder so the ONNX tracer sees one graph in every mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.sequences import left_pad


class ItemHead(nn.Module):
    """Maps an item's LM text embedding (+ optional id embedding) to its unit collaborative vector."""

    def __init__(self, text_dim: int, dim: int, hidden: int = 256, unit: bool = True) -> None:
        super().__init__()
        self.unit = unit
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, text: torch.Tensor, id_embedding: torch.Tensor) -> torch.Tensor:
        e = self.mlp(text) + id_embedding
        return F.normalize(e, dim=-1) if self.unit else e


class ItemTower(nn.Module):
    """ONNX item model: (text embedding, id embedding) -> the served item vector.

    Unit heads serve [ê ; t]. Raw (unnormalised) heads serve [e ; t ; f ; sqrt(M² - |e|² - f²)]:
      * f is 1 for an item with no id embedding (new or cold: text only) and 0 otherwise, so the context's
        matching coordinate adds the calibrated cold-item bias b to exactly those items' scores;
      * the last coordinate, with M² the largest |e|² + f² seen at export, gives every item the same
        norm, so a cosine index returns the inner-product order (the MIPS-to-cosine reduction of
        Bachrach et al., 2014); the context puts 0 there.
    The score is h·e + β·q·t + b·f.
    """

    def __init__(self, head: ItemHead, max_norm: float | None = None) -> None:
        super().__init__()
        self.head = head
        self.max_norm = max_norm

    def forward(self, text_embedding: torch.Tensor, id_embedding: torch.Tensor) -> torch.Tensor:
        e = self.head(text_embedding, id_embedding)
        if self.head.unit:
            return torch.cat([e, text_embedding], dim=-1)
        flag = text_only(id_embedding)
        pad = torch.sqrt(torch.relu(self.max_norm ** 2 - (e * e).sum(-1, keepdim=True) - flag))
        return torch.cat([e, text_embedding, flag, pad], dim=-1)


def text_only(id_embedding: torch.Tensor) -> torch.Tensor:
    """[B, 1]: 1.0 where an item has no id embedding (all zeros), else 0.0."""
    return (id_embedding.abs().sum(-1, keepdim=True) == 0).to(id_embedding.dtype)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * self.scale + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, length, dim)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ffn(self.norm2(x)))


class UserTower(nn.Module):
    """Causal transformer over history item vectors (left-padded); positions count back from the newest."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        # SASRec's input scaling: item vectors times sqrt(d) next to small positional embeddings; a learnt
        # input projection instead fitted worse (docs/tuning.md#input-scaling).
        self.input_scale = math.sqrt(dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """history [B, L, d] (zeros where padded), mask [B, L] (1 = item) -> hidden [B, L, d]."""
        length = history.shape[1]
        keep = mask.to(history.dtype)
        x = history * self.input_scale + self.pos[self.max_len - length:][None]
        x = self.drop(x) * keep[..., None]
        idx = torch.arange(length, device=history.device)
        causal = (idx[None, :] <= idx[:, None]).to(history.dtype)
        allowed = causal[None] * keep[:, None, :]
        # A padded query sees no key at all: let it see itself so softmax stays finite.
        allowed = torch.maximum(allowed, torch.eye(length, dtype=history.dtype, device=history.device)[None])
        bias = ((1.0 - allowed) * -1e4)[:, None]
        for block in self.blocks:
            x = block(x, bias)
        return self.norm(x)


class ScenarioGate(nn.Module):
    """One user interest, read per scenario: FiLM over the shared tower's output, h ⊙ (1 + tanh g_s) + b_s
    (STAR/PEPNet-style scenario-specific modulation of a shared representation). Index 0 is "no
    scenario" and stays the identity, so scenario-blind requests get the shared interest itself."""

    def __init__(self, n_scenarios: int, dim: int) -> None:
        super().__init__()
        self.gain = nn.Embedding(n_scenarios + 1, dim, padding_idx=0)
        self.shift = nn.Embedding(n_scenarios + 1, dim, padding_idx=0)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, hidden: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """hidden [N, d], scenario [N] (0 = none) -> [N, d]."""
        return hidden * (1.0 + torch.tanh(self.gain(scenario))) + self.shift(scenario)


class ContextModel(nn.Module):
    """ONNX user model: history item vectors + mask -> unit context vector ĥ of the newest position."""

    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(history, mask)[:, -1], dim=-1)


class ScenarioContextModel(nn.Module):
    """ONNX user model of a scenario-aware bundle: history + mask + scenario index [B] -> unit context."""

    def __init__(self, tower: UserTower, gate: ScenarioGate) -> None:
        super().__init__()
        self.tower, self.gate = tower, gate

    def forward(self, history: torch.Tensor, mask: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.gate(self.tower(history, mask)[:, -1], scenario), dim=-1)


class LMSeqNet(nn.Module):
    """Training-time net: item head + id embeddings + user tower, full-softmax next-item logits."""

    def __init__(self, text: torch.Tensor, known: torch.Tensor, dim: int, layers: int, heads: int,
                 dropout: float, max_len: int, unit: bool = True, n_scenarios: int = 0) -> None:
        super().__init__()
        self.unit = unit
        self.register_buffer("text", text)  # [n_items, text_dim], unit LM embeddings (fixed)
        self.register_buffer("known", known.to(text.dtype))  # 1 = item seen in training, has an id embedding
        self.head = ItemHead(text.shape[1], dim, unit=unit)
        self.ids = nn.Parameter(torch.randn(text.shape[0], dim) * 0.02)
        self.tower = UserTower(dim, layers, heads, dropout, max_len)
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        self.gate = ScenarioGate(n_scenarios, dim) if n_scenarios else None

    def item_vectors(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        gate = self.known if id_keep is None else self.known * id_keep
        return self.head(self.text, self.ids * gate[:, None])

    @torch.no_grad()
    def context_scores(self, histories: list, items: torch.Tensor, batch: int = 256,
                       scenarios: np.ndarray | None = None) -> np.ndarray:
        """Scores of `items` [n, d] for each history (item index arrays) with the unit context the
        ContextModel export serves: the same order as raw h, and scores comparable across users.
        `scenarios`: per history, the scenario index (0 = none) a scenario-aware net reads."""
        out = []
        for start in range(0, len(histories), batch):
            seq = torch.from_numpy(left_pad(histories[start:start + batch], self.tower.max_len)).to(items.device)
            last = self.hidden(seq, items)[:, -1]
            if self.gate is not None and scenarios is not None:
                last = self.gate(last, torch.from_numpy(np.asarray(scenarios[start:start + batch], dtype=np.int64))
                                 .to(items.device))
            out.append((F.normalize(last, dim=-1) @ items.T).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(items)), dtype=np.float32)

    def hidden(self, seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """seq [B, L] item index + 1 (0 = pad) -> unit hidden states [B, L, d]."""
        padded = torch.cat([torch.zeros_like(items[:1]), items], 0)
        hidden = self.tower(padded[seq], seq != 0)
        return F.normalize(hidden, dim=-1) if self.unit else hidden

    def logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.log_scale.exp() if self.unit else 1.0) * hidden @ items.T
