"""Stage 1 of the LM recommender: fine-tune the text encoder on interaction data.

Items consumed close together in a user's history are positives for each other (symmetric InfoNCE with
in-batch negatives), so the encoder's item embeddings learn what co-occurs, not just what reads alike.
An anchor term keeps each embedding close to the frozen pre-trained one: free-text requests are encoded
by the same model, and without it a few hundred co-occurrence steps erode the language understanding
those requests need (the "animated children's movie" query drifting to whatever is popular).

Only the top `train_layers` transformer layers are trained (BERT-family encoders; others train whole).
The catalogue is fixed during fine-tuning, so the frozen layers' token states are computed once per item
and each step runs just the top layers: measured ~7 s per full-model step vs under 1 s here on the
shared 2-core machine, which is what fits fine-tuning into the 20-minute training budget.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from training.replica import current
from training.sequences import torch_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    # 1000: more steps stopped paying on ML-100K validation (2000 did worse), and 1000 keep `lmrec train`
    # within its 20-minute budget (docs/tuning.md#finetune-steps).
    steps: int = 1000
    batch_pairs: int = 32
    lr: float = 3e-5
    temperature: float = 0.05
    window: int = 3
    anchor_weight: float = 5.0
    max_length: int = 64
    threads: int = 2
    train_layers: int = 2
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def co_occurrence_pairs(sequences: list[np.ndarray], window: int) -> np.ndarray:
    """(earlier, later) item pairs at most `window` steps apart in one history, distinct items only."""
    pairs = []
    for seq in sequences:
        for gap in range(1, window + 1):
            if len(seq) > gap:
                pairs.append(np.stack([seq[:-gap], seq[gap:]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    out = np.concatenate(pairs).astype(np.int64)
    return out[out[:, 0] != out[:, 1]]


class _Tokens:
    """Item texts tokenised once; batches are padded to their own longest text."""

    def __init__(self, tokenizer, texts: list[str], max_length: int) -> None:
        self.ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        self.pad_id = tokenizer.pad_token_id or 0

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids[i] for i in items]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            ids[n, :len(row)] = torch.tensor(row)
            mask[n, :len(row)] = 1
        return ids, mask


class _TopLayers:
    """Token states below the trained layers, cached per item; runs the trained layers on a batch."""

    def __init__(self, pooled: torch.nn.Module, tokens: _Tokens, train_layers: int) -> None:
        from transformers.masking_utils import create_bidirectional_mask

        self._mask_fn = create_bidirectional_mask
        model = pooled.encoder
        self.config = model.config
        self.layers = model.encoder.layer[len(model.encoder.layer) - train_layers:]
        self.module = self.layers  # what a data-parallel replica synchronises (training/replica.py)
        split = len(model.encoder.layer) - train_layers
        self.states: list[torch.Tensor] = []
        self.reference: list[torch.Tensor] = []
        with torch.no_grad():
            order = np.arange(len(tokens.ids))
            for start in range(0, len(order), 128):
                items = order[start:start + 128]
                ids, mask = tokens.batch(items)
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                reference = _mean_pool(out.last_hidden_state, mask)
                for row, item in enumerate(items):
                    n = int(mask[row].sum())
                    self.states.append(out.hidden_states[split][row, :n].clone())
                    self.reference.append(reference[row])
        for name, p in pooled.named_parameters():
            p.requires_grad_(False)
        for p in self.layers.parameters():
            p.requires_grad_(True)

    def parameters(self):
        return self.layers.parameters()

    def __call__(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings of `items` through the trained layers, and their frozen reference embeddings."""
        width = max(len(self.states[i]) for i in items)
        dim = self.states[items[0]].shape[1]
        h = torch.zeros(len(items), width, dim)
        mask = torch.zeros(len(items), width, dtype=torch.long)
        for row, i in enumerate(items):
            n = len(self.states[i])
            h[row, :n] = self.states[i]
            mask[row, :n] = 1
        # The cache stays in host memory; the trained layers may sit on a GPU (a Ray Train worker's).
        device = next(self.layers.parameters()).device
        h, mask = h.to(device), mask.to(device)
        attention = self._mask_fn(config=self.config, inputs_embeds=h, attention_mask=mask)
        for layer in self.layers:
            h = layer(h, attention_mask=attention)
            h = h[0] if isinstance(h, tuple) else h
        return _mean_pool(h, mask), torch.stack([self.reference[i] for i in items]).to(device)


class _WholeModel:
    """Fallback for encoders without a BERT-style layer list: every step runs the full model."""

    def __init__(self, pooled: torch.nn.Module, tokens: _Tokens) -> None:
        self.pooled, self.tokens = pooled, tokens
        self.module = pooled
        self.frozen = copy.deepcopy(pooled).eval()
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def parameters(self):
        return self.pooled.parameters()

    def __call__(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokens.batch(items)
        with torch.no_grad():
            reference = self.frozen(ids, mask)
        device = next(self.pooled.parameters()).device
        return self.pooled(ids.to(device), mask.to(device)), reference.to(device)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def finetune_encoder(pooled: torch.nn.Module, tokenizer, texts: list[str], sequences: list[np.ndarray],
                     config: FinetuneConfig) -> dict:
    """Fine-tunes `pooled` (a PooledEncoder) in place; returns training statistics for the manifest.

    As one of N data-parallel replicas (training/replica.py), each samples batch_pairs / N pairs a step
    from its own shard of the pairs, and every replica's pairs are in-batch negatives of every other's
    (the embeddings are all-gathered), so the N replicas compute the loss of one batch of batch_pairs.
    """
    pairs = co_occurrence_pairs(sequences, config.window)
    if config.steps == 0 or len(pairs) == 0:
        return {"steps": 0, "pairs": int(len(pairs))}
    replica = current()
    shard = replica.shard(pairs)
    batch_pairs = replica.local_batch(config.batch_pairs)
    rng = np.random.default_rng(replica.seed(config.seed))
    torch.manual_seed(config.seed)
    tokens = _Tokens(tokenizer, texts, config.max_length)
    with torch_threads(config.threads):
        layers = getattr(getattr(pooled.encoder, "encoder", None), "layer", None)
        if layers is not None and 0 < config.train_layers < len(layers):
            embed = _TopLayers(pooled, tokens, config.train_layers)
        else:
            embed = _WholeModel(pooled, tokens)
        step = replica.wrap(embed, embed.module)
        device = replica.device
        trainable = [p for p in embed.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.01)
        warmup = max(1, config.steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (config.steps - s) / max(1, config.steps - warmup)))
        losses = []
        pooled.train()
        bar = tqdm(range(config.steps), desc="fine-tune LM", leave=False, disable=replica.rank > 0)
        loop_started = time.perf_counter()
        for _ in bar:
            batch = shard[rng.integers(0, len(shard), size=batch_pairs)]
            unique, inverse = np.unique(batch, return_inverse=True)
            inverse = torch.from_numpy(inverse.reshape(batch.shape)).to(device)
            emb, reference = step(unique)
            left, right = replica.gather(emb[inverse[:, 0]]), replica.gather(emb[inverse[:, 1]])
            positives = replica.gather(torch.from_numpy(batch[:, 1]).to(device))
            logits = left @ right.T / config.temperature
            # The same item on the other side of another pair is not a negative.
            same = (positives[None, :] == positives[:, None]) & ~torch.eye(len(positives), dtype=torch.bool,
                                                                            device=device)
            logits = logits.masked_fill(same, -1e4)
            labels = torch.arange(len(positives), device=device)
            contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            anchor = (1 - (emb * reference).sum(-1)).mean()
            loss = contrastive + config.anchor_weight * anchor
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            losses.append((contrastive.item(), anchor.item()))
            bar.set_postfix(nce=f"{losses[-1][0]:.3f}", anchor=f"{losses[-1][1]:.4f}")
        loop_seconds = time.perf_counter() - loop_started
    pooled.cpu()  # embedding the catalogue and the export run on the host, wherever the layers trained
    pooled.eval()
    for p in pooled.parameters():
        p.requires_grad_(True)
    head = np.mean(losses[: max(1, len(losses) // 10)], axis=0)
    tail = np.mean(losses[-max(1, len(losses) // 10):], axis=0)
    stats = {"steps": config.steps, "pairs": int(len(pairs)), "trained_layers": config.train_layers,
             "mode": type(embed).__name__.strip("_"), "contrastive_first": float(head[0]),
             "contrastive_last": float(tail[0]), "anchor_last": float(tail[1])}
    log.info("LM fine-tune: %s", stats)
    replica.report("lm_finetune", {**stats, "seconds": round(loop_seconds, 3)})
    return stats


@torch.no_grad()
def embed_texts(pooled: torch.nn.Module, tokenizer, texts: list[str], max_length: int, batch: int = 128,
                threads: int = 2) -> np.ndarray:
    """Unit LM embeddings of `texts` with the (fine-tuned) PyTorch encoder, float32 [n, dim]."""
    tokens = _Tokens(tokenizer, texts, max_length)
    order = np.argsort([len(t) for t in tokens.ids], kind="stable")  # similar lengths per batch: less padding
    result = None
    with torch_threads(threads):
        for start in range(0, len(order), batch):
            items = order[start:start + batch]
            emb = pooled(*tokens.batch(items)).numpy()
            if result is None:
                result = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            result[items] = emb
    return result
