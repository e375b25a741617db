"""SASRec (Kang & McAuley, 2018) trained with full-softmax cross-entropy over the whole catalogue.

A causal transformer reads the user's last `max_len` items and predicts the next item at every position;
the output layer is tied to the input item embeddings. Full softmax instead of the paper's one sampled
negative is what makes SASRec competitive under full-catalogue ranking (Klenitskiy & Vasilev, 2023).
Validation fits stop early on validation NDCG@10 and record the best epoch; test fits retrain on the
longer histories for exactly that many epochs, because the test phase has no held-out signal to watch.
"""

from __future__ import annotations

import math
import numpy as np
import torch
from torch import nn

from training.metrics import phase_ndcg10
from training.protocols import Recommender
from training.sequences import PAD, fit_next_item, left_pad, torch_threads, training_windows
from training.split import Phase, SplitData



class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.hidden, self.heads, self.max_len = hidden, heads, max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden * 4, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] left-padded (item index + 1, 0 = pad) -> hidden states [B, L, H]."""
        batch, length = seq.shape
        pad = seq == PAD
        # Positions count back from the newest item, so a batch padded to less than max_len still puts
        # the last item at the same position as scoring does.
        positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.hidden) + self.pos_emb(positions)[None]
        x = self.dropout(x) * (~pad)[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = causal[None] & ~pad[:, None, :]
        # A padded query would otherwise see no key at all and softmax to NaN; let it see itself.
        allowed |= torch.eye(length, dtype=torch.bool, device=seq.device)[None]
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seq.device).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.heads, dim=0)
        return self.norm(self.encoder(x, mask=mask))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_emb.weight[1:].T


class SASRec(Recommender):
    name = "sasrec"

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 1, dropout: float = 0.2, max_len: int = 50,
                 lr: float = 2e-3, batch_size: int = 128, max_epochs: int = 100, eval_every: int = 2,
                 patience: int = 8, smooth_checks: int = 3, weight_average: float = 0.99,
                 fixed_epochs: int | None = None, all_windows: bool = True, threads: int = 1, seed: int = 0) -> None:
        # Early stopping and weight averaging as the LM recommender's (LMRecConfig), so neither model's
        # epoch count is picked by a noisier rule than the other's.
        self.hidden, self.layers, self.heads, self.dropout, self.max_len = hidden, layers, heads, dropout, max_len
        self.lr, self.batch_size, self.max_epochs = lr, batch_size, max_epochs
        self.eval_every, self.patience, self.fixed_epochs, self.seed = eval_every, patience, fixed_epochs, seed
        self.all_windows, self.threads, self.smooth_checks = all_windows, threads, smooth_checks
        self.weight_average = weight_average
        self._net: _SASRecNet | None = None
        self._history: list[np.ndarray] = []
        self._best_epoch: int | None = None
        self.curve: list[tuple[int, float]] = []

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"hidden": 16, "layers": 1, "max_len": 20, "max_epochs": 2, "eval_every": 1, "weight_average": 0.0}]
        # Kept to two points because one run costs minutes on a 2-core CPU; the rest was hand-checked on
        # ML-100K validation (docs/tuning.md#sasrec-grid). max_len 50 with every window of a longer history
        # used for training keeps all transitions while attention stays short.
        return [{"hidden": 64, "layers": 2, "max_len": 50, "lr": 2e-3, "dropout": d} for d in (0.2, 0.5)]

    def fitted_params(self) -> dict:
        return {"fixed_epochs": self._best_epoch} if self._best_epoch else {}

    def fit(self, data: SplitData, phase: Phase) -> None:
        with torch_threads(self.threads):
            self._fit(data, phase)

    def _fit(self, data: SplitData, phase: Phase) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._history = data.history_sequences(phase)
        net = _SASRecNet(data.n_items, self.hidden, self.layers, self.heads, self.dropout, self.max_len)
        self._net = net
        windows = training_windows(self._history, self.max_len + 1, self.all_windows)
        early_stop = phase == "validation" and self.fixed_epochs is None
        val_users = data.eval_users("validation") if early_stop else None

        def loss_fn(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            hidden = net(inputs)
            keep = targets != PAD
            # Only real positions reach the |catalogue|-wide output layer; padding is most of the window.
            return nn.functional.cross_entropy(net.logits(hidden[keep]), targets[keep] - 1)

        self.curve, best_epoch = fit_next_item(
            net, windows, lr=self.lr, batch_size=self.batch_size, epochs=self.fixed_epochs or self.max_epochs,
            rng=rng, loss_fn=loss_fn, validate=(lambda: self._validation_ndcg(data, val_users)) if early_stop else None,
            eval_every=self.eval_every, patience=self.patience, smooth=self.smooth_checks,
            weight_average=self.weight_average, desc=f"sasrec[{phase}]")
        if best_epoch is not None:
            self._best_epoch = best_epoch

    def _validation_ndcg(self, data: SplitData, users: np.ndarray) -> float:
        return float(phase_ndcg10(self.score(users), data, "validation", users).mean())

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            return self._score(user_idx)

    @torch.no_grad()
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        self._net.eval()
        out = []
        for start in range(0, len(user_idx), 256):
            users = user_idx[start:start + 256]
            seq = torch.from_numpy(left_pad([self._history[u] for u in users], self.max_len))
            out.append(self._net.logits(self._net(seq)[:, -1]).numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, self._net.item_emb.num_embeddings - 1),
                                                                 dtype=np.float32)
