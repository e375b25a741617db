"""Flags over environment over defaults, the same way for every service process."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeVar, get_args

from pydantic import BaseModel, ValidationError

S = TypeVar("S", bound=BaseModel)


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type[BaseModel]) -> None:
    """Adds `--field-name` for every settings field the parser does not already take, so each knob declared
    in the settings model is also a flag (`--x` / `--no-x` for booleans). Values stay strings for pydantic
    to convert and check, as it does for environment variables; a flag declared by hand keeps its help.
    """
    taken = {action.dest for action in parser._actions}
    for name, info in settings_cls.model_fields.items():
        if name in taken:
            continue
        flag = "--" + name.replace("_", "-")
        default = "unset" if info.default is None else info.default
        help_text = info.description or f"settings field {name} (default {default})"
        if info.annotation is bool or bool in get_args(info.annotation):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, help=help_text)


def settings_from_flags(parser: argparse.ArgumentParser, argv: list[str] | None, settings_cls: type[S]) -> S:
    """Builds settings from the flags given (absent flags leave environment and defaults alone).

    Every field of `settings_cls` is a flag (`add_settings_flags`). A bad value stops the process at start
    with the field's name, not a traceback.
    """
    add_settings_flags(parser, settings_cls)
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
