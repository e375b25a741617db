"""How a bundle's served vectors are laid out: [collaborative ; text ; trailing components].

Item and context vectors share the layout, so score = item · context. The collaborative part is what the
ranker learnt from ids and histories (empty for a zero-shot bundle), the text part the unit LM vector;
trailing components are single coordinates, named in `Trailing` (training/lm_model.py ItemTower).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# "text_only": 1 for an item the ranker knows by its text alone, else 0; the context's coordinate is the
#   calibrated cold-item bias (hyperparameter `cold_bias`).
# "norm_pad": equalises item norms so a cosine index returns the inner-product order; the context's is 0.
Trailing = Literal["text_only", "norm_pad"]


class VectorLayout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collaborative: int = Field(ge=0)
    text: int = Field(gt=0)
    trailing: tuple[Trailing, ...] = ()

    @property
    def dimension(self) -> int:
        return self.collaborative + self.text + len(self.trailing)

    def mismatch(self, text_dimension: int, served_dimension: int) -> str | None:
        """Why this layout cannot describe vectors of that encoder and served length; None if it can."""
        if self.text != text_dimension:
            return f"vector_layout.text is {self.text}, the encoder's dimension is {text_dimension}"
        if self.dimension != served_dimension:
            return (f"vector_layout adds up to {self.dimension} ({self.collaborative} + {self.text} + "
                    f"{len(self.trailing)} trailing), the served vectors have {served_dimension}")
        return None


def legacy_layout(ranker_kind: str, hyperparameters: dict[str, Any], text_dimension: int) -> VectorLayout:
    """The layout of a bundle written before manifests recorded one, from the keys it has.

    Raises:
        KeyError: an `lm_seq` bundle without hyperparameter `dim`.
    """
    if ranker_kind != "lm_seq":  # the only other kind then was zero_shot: text vectors alone
        return VectorLayout(collaborative=0, text=text_dimension)
    if hyperparameters.get("unit", True):
        trailing: tuple[Trailing, ...] = ()
    elif "cold_bias" in hyperparameters:
        trailing = ("text_only", "norm_pad")
    else:  # raw heads from before the calibrated cold-item bias
        trailing = ("norm_pad",)
    return VectorLayout(collaborative=int(hyperparameters["dim"]), text=text_dimension, trailing=trailing)
