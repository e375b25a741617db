"""Flags over environment over defaults, the same way for every service process."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

S = TypeVar("S", bound=BaseModel)


def settings_from_flags(parser: argparse.ArgumentParser, argv: list[str] | None, settings_cls: type[S]) -> S:
    """Builds settings from the flags given (absent flags leave environment and defaults alone).

    A bad value stops the process at start with the field's name, not a traceback.
    """
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"{parser.prog}: invalid settings\n{exc}") from None


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so a supervisor polling the file never reads a half-written port."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)
