"""Classical baselines behind the `Recommender` contract, each with its own small tuning grid.

`BASELINES` maps the harness name to the class; every class takes its hyperparameters plus `seed` as
keyword arguments and exposes `param_grid(quick)`, the candidates tuned on validation NDCG@10.
"""

from __future__ import annotations

from training.baselines.ease import EASE
from training.baselines.implicit_mf import ALS, BPR
from training.baselines.itemknn import ItemKNN
from training.baselines.mostpop import MostPop
from training.baselines.sasrec import SASRec

BASELINES = {cls.name: cls for cls in (MostPop, ItemKNN, EASE, ALS, BPR, SASRec)}

__all__ = ["ALS", "BASELINES", "BPR", "EASE", "ItemKNN", "MostPop", "SASRec"]
