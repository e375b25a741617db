"""Renders results.json into docs/evaluation.md (markdown tables) and PNG plots, one set per dataset."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

from training.policy_report import policy_section  # noqa: E402

BUCKETS = ("head", "torso", "tail")
MAIN_METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10")

PROTOCOL_TEXT = """\
## Protocol

* **Interactions.** Every rating is an implicit positive interaction. A repeated (user, item) pair keeps
  only its first occurrence, so every target is an item the user has not had before.
* **Order.** Per user, interactions are sorted by timestamp; ties are broken by the raw item id (string
  order, the same order as `Dataset.histories()`), so the split is deterministic.
* **Users.** Users with fewer than 3 interactions are dropped.
* **Leave-one-out.** The last interaction is the test item, the one before it the validation item, the
  rest is train.
* **Cold-start items.** A seeded 10% of the catalogue (`--cold-fraction`, `--seed`) is cold: its
  interactions are removed from train and validation (a user whose validation item is cold has no
  validation target), but cold items stay candidates and can be test targets. The *cold slice* is the
  users whose test item is cold. Models that only learn item ids cannot rank these items (they score ~0):
  this slice is where a content-aware (LM) model can show what ids cannot.
* **Candidates.** All catalogue items, dense-indexed 0..n-1; the user's own history items are masked with
  -inf; the rank of the held-out item is computed over the whole catalogue (no sampled negatives).
  Ties count against the target (an item with the same score is ranked above it).
* **Phases.** Validation: history = train, target = validation item; every hyperparameter is chosen on
  validation NDCG@10. Test: history = train + validation item (the standard refit; the validation item
  is therefore masked), target = test item. Models are refitted for test with the chosen parameters;
  the sequential models train for the best validation epoch count, since the test phase has no signal
  to stop on.
* **Sequential training.** SASRec and lmrec share one training loop (training/sequences.py): Adam over
  length-bucketed windows, full-softmax cross-entropy, validation NDCG@10 every 2 epochs, early stopping
  on the mean of 3 consecutive checks with patience 8 (at most 100 epochs), and a moving average of the
  weights (decay 0.99 per step; an epoch is only ~16 steps) that validation and the refit model use.
  Without the averaging both validation curves jumped by up to ±0.01 between checks on their plateaus
  (lmrec 0.104-0.127 over epochs 40-116), so noise picked the epoch count; with it they rose smoothly
  (validation, no hold-out: lmrec 0.117-0.124 from epoch 40, SASRec 0.110-0.112 from epoch 32). This
  was chosen on validation curves; on test it moved SASRec from 0.1023 to 0.1059 and lmrec from 0.0950
  to 0.1023 (INT8 towers; 0.0942 to 0.1041 FP32).
* **Metrics.** HR@k (target in top k), NDCG@k (1/log2(rank+1) if rank <= k, one relevant item),
  MRR@10, averaged over users; coverage@10 = share of the catalogue in at least one user's top 10.
  95% CIs are percentile bootstraps over users (1000 resamples).
* **Beyond accuracy** (training/beyond_accuracy.py; definitions as in Microsoft Recommenders'
  `python_evaluation` where it has them), over each user's top 10. ILD@10 (LM): per list, the mean over
  item pairs of 1 - cosine similarity of the items' pre-trained MiniLM text embeddings (one space for
  every model; 0 = same direction, 1 = orthogonal), averaged over users. ILD@10 (attributes): the same
  with the Jaccard distance between the items' attribute sets (MovieLens: genres and year). Novelty@10:
  the mean -log2 p(i) of the recommended items in bits, p(i) = share of users whose test-phase history
  holds item i (never seen: a count of 1); higher = less popular. Gini@10: Gini coefficient of how often
  each catalogue item appears across all lists, never-recommended items included (0 = equal exposure,
  towards 1 = a few items take every slot).
* **Significance.** Each model against the best baseline (highest test NDCG@10): two-sided paired
  sign-flip permutation test over users on the per-user NDCG@10 and HR@10 (10 000 resamples; p is
  (count + 1) / (resamples + 1)). No correction for multiple comparisons.
* **Timestamp ties.** MovieLens stores seconds and users rate in bursts: in ML-100K, 51% of consecutive
  interactions share a timestamp and 44% of test items share theirs with the validation item, so the
  item-id tie-break decides many targets. A side check with seeded random tie-breaks instead (same
  seed, same cold items) raised test NDCG@10 for ALS (factors=128, reg=10, alpha=1: 0.053 to 0.066) and
  EASE (l2=100: 0.050 to 0.066) and left SASRec unchanged (0.102 to 0.103): the id-ordered protocol is
  harder for the non-sequential baselines, not easier for SASRec. ItemKNN and ALS now tune a recency
  weighting of the history (`recency_half_life`, in positions from the end), which validation chose for
  both. The gain is not an artefact of the tie-break: in a side check on validation (ItemKNN), seeded
  shuffles of same-second items gave NDCG@10 0.095-0.097 against 0.097 id-ordered, and a decay over
  seconds (1-minute half-life) instead of positions gave 0.099.
* **Popularity slices.** Warm items are sorted by their history popularity and cut so that head, torso
  and tail each hold a third of the history interactions; users are grouped by their test item's bucket.
* **User slices.** Users grouped by the length of their test-phase history (<= 50, 51-150, > 150
  items) and, where the dataset describes its users (docs/data.md), by gender and age band. They say
  where a model's accuracy comes from; nothing is tuned on them.
"""

HOWTO_TEXT = """\
## Regenerate

```
lmrec evaluate                                # or: python -m training.evaluate
lmrec evaluate --models lmrec,sasrec,ease     # a subset; results.json keeps other datasets
lmrec evaluate --quick --out /tmp/eval        # tiny grids, a smoke run
python -m training.report                     # re-render this page and the PNGs from results.json
```

Everything on this page, `evaluation/results.json` and the PNGs are written by that command; edit
`training/report.py`, not this file.

The served system is evaluated through its public gRPC API with the same split: train a bundle
(`lmrec train`), serve it (`lmrec serve --bundle artifacts/lmrec-ml100k`), then
`lmrec evaluate --models served --target 127.0.0.1:50051`. Each test user is sent as a fresh user id
with the test-phase history as `recent_item_ids`; the gateway's top 20 is what gets scored.
`tests/integration/test_trained_model.py` checks that served and offline rankings are identical for
the same input.
"""

MODEL_TEXT = """## The LM recommender (`lmrec`)

Two stages, trained by `lmrec train` (the same code the harness runs as `lmrec` / `lmrec-fp32`):

1. **LM fine-tuning.** all-MiniLM-L6-v2 (any HF encoder via `--lm`) is fine-tuned so that items consumed
   close together in a history (≤ 3 steps apart) embed close together: symmetric InfoNCE with in-batch
   negatives, plus an anchor term keeping each item embedding near the pre-trained one so free-text
   requests, encoded by the same model, still mean what they say. Only the top 2 of 6 layers train, over
   cached lower-layer states (a full-model step costs ~7 s on these 2 shared cores). 1000 steps of 32
   pairs by default (~4 min): on ML-100K validation (seed 0) 100 / 400 / 1000 steps gave NDCG@10
   0.1145 / 0.1151 / 0.1181, and meeting the cold-item ratio there cost 26% / 17% / 15% of it, so the
   LM stage is where more compute paid, up to a point: 2000 steps gave 0.1094 at a 25% cost. (Until
   2026-11-24 the default was 100 steps. Both bundles in this report were retrained with 1000; on
   ml-latest-small that moved test NDCG@10 from 0.0663 to 0.0679, no tuning involved.) `lmrec train` with 1000 steps took 16 min 27 s wall on ML-100K and
   36 min 53 s on ml-latest-small (9125 items, longer texts with tags), export and parity included.
2. **Sequence model over LM item vectors.** Item vector e = MLP(text embedding) + id embedding; a
   2-layer, 1-head causal transformer over the history's e (scaled by sqrt(d), as SASRec does) gives the
   user vector h; full-softmax cross-entropy over the catalogue with dot-product logits (as SASRec),
   trained by the same loop as SASRec (see Protocol). Id embeddings are dropped for 30% of items at each step, so the
   text path learns to rank on its own: cold items (never in training) and items upserted after training
   have no id embedding and are served from their text. What was tried on validation NDCG@10 (SASRec:
   0.114): unit-norm vectors with cosine logits and 30% id dropout peaked at 0.056; raw dot products with
   a learnt input projection at 0.089; the sqrt(d) input scaling at 0.1155 (30% id dropout: 0.1143).
   The ML-100K validation fit ends at the 100-epoch cap (best epoch 98). With a cap of 220 it stopped
   early at epoch 128, best at 112, at 0.1189 against 0.1181: a plateau, so the cap stays.
3. **Cold-item bias.** A text-only item lacks what the id embedding carries (popularity above all), so
   the served score adds a bias b to text-only items. b is calibrated on validation data with items the
   validation fit never saw: a seeded 10% of the trained items lose all their training interactions for
   that fit, as the split's cold items do. (Dropping only their id embeddings was a false proxy: their
   text path had been trained with them as targets, so it promised cold HR@10 0.18 where real cold items
   got 0.00.) The rule: the best validation NDCG@10 within 2% of the curve's best, preferring a b whose
   cold HR@10 is at least half the warm HR@10 (training/cold_calibration.py). The bundle manifest keeps
   the whole bias / NDCG / cold-HR curve and what meeting the cold target would cost. Default run on
   ML-100K (1000 LM steps): b = 0.04 (validation NDCG@10 0.1157, the curve's best; held-out cold HR@10
   0.000 against warm 0.240); meeting the ratio needs b = 0.20, at validation NDCG@10 0.0989 (-14.5%;
   with 100 LM steps it was b = 0.22 at -26%). The text path ranks unseen items far better than chance
   among themselves but not well enough (test cold targets: median rank 33.5 of the 168 text-only items),
   so a bias big enough to lift them lifts the wrong ones too.
4. **Reserved slots instead of a bias (diagnostic on test, 2026-11-24; not used for tuning).**
   The gateway serves this per request: `RecommendRequest.new_item_slots` = s keeps s of the top k for
   the best-scored text-only items, which replace the lowest others (lmrec/slots.py).
   `python bench/cold_slots.py --bundle <bundle>` ranks offline with the same function. It reads the bundle's
   test fit, the only fit a bundle keeps, so these figures describe the trade-off; they tune nothing.
   ML-100K, bundle with 1000 LM steps: s = 0 gives NDCG@10 0.1080 at a cold/warm HR@10 ratio of 0.07;
   s = 1 0.1040 at 0.11; s = 2 0.1030 (-4.6%) at 0.48; s = 3 0.1001 (-7.3%) at 0.56, which meets the cold
   target but puts lmrec 5.5% below SASRec. (The 100-step bundle: s = 0 0.1041 at 0.18, s = 2 0.0972 at
   0.42, s = 3 0.0929 at 0.65.) The bias needs -14.5% of validation NDCG@10 to reach 0.5, so a quota is
   about twice as cheap per unit of ratio. It still costs more NDCG than the margin over SASRec allows,
   so the default stays s = 0 and a product team sets s per request. On latest-small no quota helps:
   s = 4 reaches a ratio of only 0.25 (NDCG@10 0.0679 at s = 0, 0.0584 at s = 4). There, a cold test
   target's median rank among the 912 text-only items is 162.5 (random would be ~456; 178 with 100 LM
   steps), and none ranks first. The limit is how weakly the item text (title, year,
   genres, sparse tags) tells unseen items apart, not how they are lifted.
   **How far a better text path could go** (`--oracle-bound`, 2026-11-24). Each user's scores for the
   text-only items are kept as a set, so where they land against trained items is the model's, and only
   their order among themselves changes: by the model's score plus w x the items' true popularity,
   counted over the whole dataset with test and cold interactions included. That leak is deliberate: no
   text model can know more about an unseen item's general appeal. Best rows over w = 0.25 to 2. On
   ML-100K the cold target ranks first among the text-only items for 9.5% of cold users, against 2.4%
   (median rank 19.5 against 33.5). Even so, s = 1 reaches a ratio of only 0.45 (NDCG@10 0.1068), and
   s = 2 reaches 0.73 at 0.1049 (-2.9%, below SASRec's 0.1059). The bias reaches 0.5 at 0.0960 at
   best (-11%). On latest-small, s = 4 reaches 0.497, just short of 0.5, at 0.0593 (-12.7%, below
   SASRec's 0.0599). So knowing each unseen item's true popularity would still not meet both targets at
   once: on ML-100K the cold target costs about 3% of NDCG@10, six times lmrec's seed-averaged margin
   over SASRec (+0.5%, item 5). What is missing is each user's taste for the unseen items, which title,
   year and genres do not carry.
5. **Seed spread (side check, 2026-11-24).** The table's rows are one model seed each. Refitting both
   sequential models on the same split with model seeds 1 and 2 (the LM fine-tuning keeps seed 0; the
   epochs and cold bias of seed 0's validation fit; lmrec scored FP32 in PyTorch, which ranks as the served FP32
   graphs do), 1000 LM steps: lmrec test NDCG@10 0.1080 / 0.1028 / 0.1063 (mean 0.1057, sd 0.0027),
   SASRec 0.1059 / 0.1079 / 0.1017 (mean 0.1052, sd 0.0032). Averaged over the three seeds per user,
   lmrec vs SASRec is +0.5% (paired permutation p = 0.89); with 100 LM steps it was -0.1% (lmrec mean
   0.1051, p = 0.98). Seed 0's +2.0% in the table is within seed noise: seed 1 alone would show lmrec
   4.7% behind. On warm items the LM-assisted model ties a well-trained SASRec on ML-100K; what it adds
   is reach to items without interactions (the cold slice) and free-text requests. Reproduce with
   `python bench/seed_spread.py --seeds 1,2` after `lmrec evaluate`.
6. **Four more ways to make the text count, none adopted (2026-11-24).** (a) An L2 penalty pulling id
   embeddings towards zero, so that rarely seen items lean on their text vector (lmrec is behind SASRec
   on the tail bucket above): validation NDCG@10, ML-100K, seed 0, 0.1145 without it and 0.1141 /
   0.1135 / 0.1131 at weights 0.01 / 0.05 / 0.5. (b) Adding γ × the cosine between the candidate's LM
   text vector and the mean text vector of the user's last n items, the LM's item-to-item similarity
   next to the sequence model. (c) Giving a cold item the similarity-weighted mean id embedding of its
   10 textually nearest trained items. (b) and (c) were diagnostics on the 100-step bundle's test fit,
   so they tune nothing. (b) moved test NDCG@10 by -2.5% to +2.3% over n = 1–50 and γ = 0.05–0.4, within
   noise, and left cold HR@10 unchanged. (c) lowered cold HR@10 from 0.040 to 0.000–0.032 at equal
   NDCG@10: on this data, neighbours' id embeddings do not transfer to an unseen item. (d) Dropping 60%
   of id embeddings per step instead of 30%, so the text path trains more (validation fit with the
   calibration hold-out, 1000 LM steps): best validation NDCG@10 0.1125 against 0.1181, and meeting the
   cold ratio would cost 29.6% of it against 14.5%. A text path trained harder does not rank unseen
   items better here; it only weakens the warm ones.
7. **Is latest-small's SASRec under-tuned? (side check, 2026-11-24).** Its grid's winner, dropout 0.5,
   sits at the edge of the two-point grid (0.2, 0.5), so two more points were fitted on the same split's
   validation phase, with the same early stopping: dropout 0.7 reached validation NDCG@10 0.0730
   (epoch 88), and hidden 128 with dropout 0.5 reached 0.0734 (epoch 36), both below the chosen point's
   0.0785. The table's SASRec row therefore stands as the best of four tuned points.
8. **Where the LM helps, by user (2026-11-24).** The user slices above compare lmrec with SASRec within
   groups of a few hundred users, so no difference there is significant (paired permutation test per
   slice, seed 0). ML-100K: lmrec leads on short histories (<= 50 items: 0.1203 vs 0.1163, p = 0.64) and
   long ones (> 150: 0.1126 vs 0.0953, p = 0.18) and trails in between (0.0890 vs 0.0987, p = 0.26);
   by gender and age band the gaps run both ways (all p >= 0.19). On latest-small, whose texts carry
   tags, the lead is largest on short histories: 0.0777 vs 0.0595 (+31%, p = 0.054), against +8% (p =
   0.69) for 51-150 items and -11% (p = 0.56) above 150. That fits the LM's role in the design: item text
   stands in for interaction data where a user has little of it. The shortest test-phase history is 15
   items on ML-100K and 14 on latest-small, so truly new users are not measured here.

Serving: item vector [e ; t ; f ; sqrt(M² - |e|² - f²)] is computed once at upsert time (f = 1 for a
text-only item; the last coordinate gives every item the same norm, so the cosine HNSW index returns the
inner-product order); the request context [h/|h| ; β·q ; b ; 0] (q = the LM embedding of an optional
free-text request, β = 3 × the mean |e|) once per request; score = one dot product. Catalogue items
whose text is unchanged since training use the bundle's training-time FP32 text vectors; the serving
encoder runs for new items and free-text requests. `lmrec` rows are scored through the exported bundle
with the serving code as the CPU default (INT8) runtime runs it; `lmrec-fp32` through its FP32 graphs.
The INT8 runtime quantises the text encoder, where the time goes (docs/benchmarks.md); the two small
towers run their FP32 graphs, since quantising them saved 0.05 ms of a ~12 ms Recommend but moved
NDCG@10 by ±1.7% against FP32 (bundle export parity on validation, and test). So for trained catalogue
items the INT8 and FP32 rows rank alike. Items upserted after training are encoded once, off the request
path, and the worker encodes them in FP32 by default (`item_precision`), so the INT8 encoder serves only
free-text queries; the export parity still measures what INT8 item encoding would cost (every item text
re-encoded by the INT8 encoder, `item_precision=serving`): see the Targets table.
"""


_COLD_MISS = ("why, what a quota of slots costs, and what even a popularity oracle would reach: "
              "*The LM recommender*, items 3 and 4")


def _targets(result: dict) -> list[str]:
    """The issue's targets, computed from this run's numbers (never tuned on them)."""
    models, slices = result.get("models", {}), result.get("slices", {})
    if "lmrec" not in models:
        return []
    baselines = result.get("significance", {}).get("best_baseline")
    lines = ["### Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lm = models["lmrec"]["ndcg@10"]
    if baselines in models:
        best = models[baselines]["ndcg@10"]
        lift = (lm - best) / best if best else 0.0
        p = (result.get("significance", {}).get("comparisons", {}).get("lmrec", {})
             .get("ndcg@10", {}).get("p_value"))
        # A lead inside the noise is reported as such, not as a win.
        noise = f"; not significant (p = {p:.2f})" if p is not None and p >= 0.05 else ""
        lines.append(f"| lmrec NDCG@10 ≥ best baseline ({baselines}), aiming +10% | {lm:.4f} vs {best:.4f} "
                     f"({lift:+.1%}) | {'met' if lm >= best else 'missed'}{' (+10% met)' if lift >= 0.10 else ''}"
                     f"{noise} |")
    warm = slices.get("cold_start:warm", {}).get("models", {}).get("lmrec", {}).get("hr@10")
    cold = slices.get("cold_start:cold", {}).get("models", {}).get("lmrec", {}).get("hr@10")
    if warm and cold is not None:
        lines.append(f"| cold-start HR@10 ≥ ½ warm HR@10 | cold {cold:.4f}, warm {warm:.4f} "
                     f"(ratio {cold / warm:.2f}) | "
                     f"{'met' if cold >= warm / 2 else f'missed at the default (no quota); {_COLD_MISS}'} |")
    if "lmrec-fp32" in models:
        fp32 = models["lmrec-fp32"]["ndcg@10"]
        rel = (lm - fp32) / fp32 if fp32 else 0.0
        lines.append(f"| INT8 within 1% relative NDCG@10 of FP32 (as served) | INT8 {lm:.4f}, FP32 {fp32:.4f} "
                     f"({rel:+.2%}) | {'met' if abs(rel) <= 0.01 else 'missed'} |")
    parity = result.get("tuning", {}).get("lmrec", {}).get("bundle", {}).get("ranking_parity", {})
    if "reencoded_int8_vs_fp32_ndcg_rel_diff" in parity:
        rel = parity["reencoded_int8_vs_fp32_ndcg_rel_diff"]
        lines.append("| items upserted after training, as served (encoded by the FP32 encoder under the INT8 "
                     "runtime, `item_precision=fp32`) | equal to FP32 by construction (tested) | met |")
        lines.append(f"| the same if every item text were re-encoded by the INT8 encoder "
                     f"(`item_precision=serving`; export parity, {parity['users']} validation users) | "
                     f"INT8 {parity['reencoded_int8_ndcg@10']:.4f}, FP32 {parity['reencoded_fp32_ndcg@10']:.4f} "
                     f"({rel:+.2%}) | "
                     f"{'within 1%' if abs(rel) <= 0.01 else 'outside 1%, hence not the default'} |")
    return lines + [""]



def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(row: dict, metric: str, digits: int = 4) -> str:
    """Value [CI]; "–" for a metric the row lacks (a row merged from a run before it existed)."""
    if row.get(metric) is None:
        return "–"
    lo, hi = row.get(metric + "_ci", (None, None))
    return f"{_fmt(row[metric], digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _p_value(significance: dict, name: str, metric: str) -> str:
    if name == significance.get("best_baseline"):
        return "best baseline"
    comparison = significance.get("comparisons", {}).get(name)
    if not comparison:
        return "–"
    test = comparison[metric]
    return f"{test['mean_diff']:+.4f} (p={test['p_value']:.4f})"


def _models_table(result: dict) -> list[str]:
    sig = result.get("significance", {})
    lines = ["| model | HR@10 [95% CI] | NDCG@10 [95% CI] | HR@20 | NDCG@20 | MRR@10 | coverage@10 | "
             "ΔNDCG@10 vs best baseline (p) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in result["models"].items():
        lines.append(f"| {name} | {_ci(row, 'hr@10')} | {_ci(row, 'ndcg@10')} | {_fmt(row['hr@20'])} | "
                     f"{_fmt(row['ndcg@20'])} | {_fmt(row['mrr@10'])} | {_fmt(row['coverage@10'], 3)} | "
                     f"{_p_value(sig, name, 'ndcg@10')} |")
    return lines


# What training/evaluate.py added beside coverage@10; results.json rows from before lack them.
BEYOND_ACCURACY_METRICS = ("ild@10", "ild_attr@10", "novelty@10", "gini@10")


def _beyond_accuracy_table(result: dict) -> list[str]:
    """ILD, novelty, coverage and exposure Gini per model; none when no row has them (older results)."""
    rows = result["models"]
    if not any(row.get(m) is not None for row in rows.values() for m in BEYOND_ACCURACY_METRICS):
        return []
    lines = ["| model | ILD@10 (LM) [95% CI] | ILD@10 (attributes) [95% CI] | novelty@10 (bits) [95% CI] | "
             "coverage@10 | Gini@10 |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {_ci(row, 'ild@10', 3)} | {_ci(row, 'ild_attr@10', 3)} | "
                     f"{_ci(row, 'novelty@10', 2)} | {_fmt(row.get('coverage@10'), 3)} | "
                     f"{_fmt(row.get('gini@10'), 3)} |")
    return ["### Beyond accuracy", "", *lines, "",
            "Definitions: Protocol, *Beyond accuracy*. \"–\": a row merged from a run that did not compute it.",
            ""]


def _slice_table(result: dict, groups: list[str], labels: list[str]) -> list[str]:
    slices = result["slices"]
    header = "| model | " + " | ".join(
        f"{label} NDCG@10 / HR@10 (n={slices[g]['n_users']})" for g, label in zip(groups, labels)) + " |"
    lines = [header, "|---|" + "---|" * len(groups)]
    for name in result["models"]:
        cells = []
        for g in groups:
            m = slices[g]["models"][name]
            cells.append(f"{_fmt(m['ndcg@10'])} / {_fmt(m['hr@10'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _groups(result: dict, kind: str) -> list[str]:
    """The slices of one kind ("activity", "gender", ...) in the order the evaluation wrote them."""
    return [g for g in result.get("slices", {}) if g.split(":", 1)[0] == kind]


def _user_sections(result: dict, activity_plot: str | None) -> list[str]:
    """Users by history length and, where the dataset describes its users, by each attribute sliced."""
    activity = _groups(result, "activity")
    if not activity:
        return []
    # Every other kind of slice the evaluation wrote is a user attribute (training/evaluate.py).
    attributes = list(dict.fromkeys(g.split(":", 1)[0] for g in result["slices"]
                                    if g.split(":", 1)[0] not in ITEM_AND_ACTIVITY_SLICES))
    lines = ["### By user: history length and demographics", "",
             "Users grouped by how many items their test-phase history holds (new users have short ones)"
             + (", and by the attributes the dataset gives them (ML-100K: `u.user`)." if attributes else "."), "",
             *_slice_table(result, activity, [g.split(":", 1)[1] + " items" for g in activity]), ""]
    if activity_plot:
        lines += [f"![NDCG@10 by history length]({activity_plot})", ""]
    for kind in attributes:
        groups = _groups(result, kind)
        label = ATTRIBUTE_LABELS.get(kind, kind)
        lines += [*_slice_table(result, groups, [f"{label} {g.split(':', 1)[1]}" for g in groups]), ""]
    return lines


def _tuning_table(result: dict) -> list[str]:
    lines = ["| model | grid size | best validation NDCG@10 | chosen parameters |", "|---|---|---|---|"]
    for name, t in result.get("tuning", {}).items():
        best_val = max(g["val_ndcg@10"] for g in t["grid"]) if t["grid"] else None
        params = ", ".join(f"{k}={v}" for k, v in t["best_params"].items()) or "(none)"
        lines.append(f"| {name} | {len(t['grid'])} | {_fmt(best_val)} | {params} |")
    return lines


def plot_metrics(result: dict, path: Path) -> None:
    names = list(result["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("ndcg@10", "hr@10")):
        values = [result["models"][n][metric] for n in names]
        lo = [v - result["models"][n][metric + "_ci"][0] for n, v in zip(names, values)]
        hi = [result["models"][n][metric + "_ci"][1] - v for n, v in zip(names, values)]
        ax.bar(names, values, yerr=[lo, hi], capsize=4, color="tab:blue")
        ax.set_title(f"{metric.upper()} (95% bootstrap CI)")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped_bars(result: dict, groups: list[str], labels: list[str], title: str, path: Path) -> None:
    names = list(result["models"])
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, name in enumerate(names):
        values = [result["slices"][g]["models"][name]["ndcg@10"] or 0.0 for g in groups]
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(groups))])
    ax.set_xticklabels([f"{label}\n(n={result['slices'][g]['n_users']})" for g, label in zip(groups, labels)])
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(names)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Slice kinds that are not user attributes; and shorter column labels for some attributes.
ITEM_AND_ACTIVITY_SLICES = ("popularity", "cold_start", "activity")
ATTRIBUTE_LABELS = {"age_group": "age"}

# The classical baselines `lmrec evaluate` runs by default (training/evaluate.py: DEFAULT_MODELS).
STANDARD_BASELINES = ("mostpop", "itemknn", "ease", "als", "bpr", "sasrec")


def _dataset_section(dataset: str, result: dict, out_dir: Path, report_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pop_groups = [f"popularity:{b}" for b in BUCKETS]
    cold_groups = ["cold_start:warm", "cold_start:cold"]
    plots = {
        "metrics": out_dir / f"{dataset}_metrics.png",
        "popularity": out_dir / f"{dataset}_popularity.png",
        "cold": out_dir / f"{dataset}_cold_warm.png",
    }
    activity_groups = _groups(result, "activity")
    if activity_groups:
        plots["activity"] = out_dir / f"{dataset}_activity.png"
        _grouped_bars(result, activity_groups, [g.split(":", 1)[1] + " items" for g in activity_groups],
                      "NDCG@10 by length of the user's history", plots["activity"])
    plot_metrics(result, plots["metrics"])
    _grouped_bars(result, pop_groups, list(BUCKETS), "NDCG@10 by test-item popularity", plots["popularity"])
    _grouped_bars(result, cold_groups, ["warm items", "cold items"], "NDCG@10: warm vs cold-start test items",
                  plots["cold"])
    rel = {k: Path(os.path.relpath(p, report_dir)).as_posix() for k, p in plots.items()}
    run = result.get("run", {})
    machine = run.get("machine", {})
    proto = result.get("protocol", {})
    lines = [f"## {dataset}", ""]
    if run:
        lines += [
            f"Run: `{run.get('command', '')}`, seed {run.get('seed')}, {'QUICK grids, ' if run.get('quick') else ''}"
            f"{run.get('seconds')} s wall, finished {run.get('finished')}.",
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB RAM, "
            f"Python {machine.get('python')}, torch {machine.get('torch')} (CPU).",
            f"Data fingerprint: `{run.get('fingerprint', '')[:16]}…`.",
            *(["Merged with the figures of earlier runs on the same split: "
               + "; ".join(f"`{r.get('command', '')}` ({r.get('finished')})" for r in run["merged_runs"]) + "."]
              if run.get("merged_runs") else []),
            "",
        ]
    lines += [
        f"{proto.get('n_users')} users, {proto.get('n_items')} items (all candidates), "
        f"{proto.get('n_cold_items')} cold items, {proto.get('n_train_interactions')} train interactions, "
        f"{proto.get('n_validation_users')} validation users, {proto.get('n_test_users')} test users of whom "
        f"{proto.get('n_cold_test_users')} have a cold test item. Dropped: "
        f"{proto.get('dropped_users_lt_min')} users with < 3 interactions, "
        f"{proto.get('dropped_repeat_interactions')} repeats, "
        f"{proto.get('dropped_unknown_item_interactions')} interactions on unknown items, "
        f"{proto.get('dropped_cold_train_interactions')} cold-item train interactions.",
        "",
        "### Test metrics",
        "",
        *_models_table(result),
        "",
        f"![metrics by model]({rel['metrics']})",
        "",
        *_beyond_accuracy_table(result),
    ]
    missing = [m for m in STANDARD_BASELINES if m not in result.get("models", {})]
    if missing and "lmrec" in result.get("models", {}):
        lines += [f"**Baselines not run on this dataset: {', '.join(missing)}.** \"Best baseline\" below is the "
                  "best of those that were, so a target met here is met against a partial field.", ""]
    lines += _targets(result)
    sig = result.get("significance", {})
    if sig:
        lines += [f"Significance: {sig['test']}, {sig['samples']} resamples, each model vs the best baseline "
                  f"(**{sig['best_baseline']}**) on per-user NDCG@10; HR@10 p-values are in results.json.", ""]
    lines += ["### By test-item popularity (long tail)", "",
              *_slice_table(result, pop_groups, list(BUCKETS)), "",
              f"![NDCG@10 by popularity bucket]({rel['popularity']})", "",
              "### Cold-start items", "",
              *_slice_table(result, cold_groups, ["warm", "cold"]), "",
              f"![cold vs warm]({rel['cold']})", "",
              *_user_sections(result, rel.get("activity")),
              *policy_section(dataset, out_dir, report_dir),
              "### Tuning (validation NDCG@10)", "", *_tuning_table(result), ""]
    if result.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in result["skipped"].items()), ""]
    for hook, payload in result.get("extra", {}).items():
        lines += [f"### {hook}", "", "```", str(payload), "```", ""]
    return lines


def write_report(all_results: dict, out_dir: Path, report_path: Path) -> None:
    """Writes `report_path` (markdown) and the PNGs under `out_dir` for every dataset in `all_results`."""
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Offline evaluation", "",
             "<!-- generated by `lmrec evaluate` (training/report.py); do not edit by hand -->", "",
             "Tuned classical baselines and the LM recommender on the same leave-one-out split, ranked over the "
             "full catalogue. Raw numbers, tuning traces and p-values: "
             f"[{Path(os.path.relpath(Path(out_dir) / 'results.json', report_path.parent)).as_posix()}]"
             f"({Path(os.path.relpath(Path(out_dir) / 'results.json', report_path.parent)).as_posix()}).", ""]
    for dataset, result in all_results.items():
        lines += _dataset_section(dataset, result, Path(out_dir), report_path.parent)
    lines += [MODEL_TEXT, PROTOCOL_TEXT, HOWTO_TEXT]
    report_path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Re-renders the report and plots from an existing results.json, without re-running models."""
    parser = argparse.ArgumentParser(prog="python -m training.report", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation"), help="folder holding results.json")
    parser.add_argument("--report", type=Path, default=None, help="markdown to write (default: <out>.md)")
    args = parser.parse_args(argv)
    results = json.loads((args.out / "results.json").read_text())
    write_report(results, args.out, args.report or args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
