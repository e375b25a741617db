"""The contract: buf lint clean, and the checked-in stubs are exactly what protos/ generates."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from tests.dev_tools import tool

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import gen_protos  # noqa: E402


def test_buf_lint_is_clean():
    buf = tool("buf", "buf-bin")
    result = subprocess.run([buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checked_in_stubs_match_protos(tmp_path):
    generated = gen_protos.generate(tmp_path)
    assert generated
    for fresh in generated:
        checked_in = REPO / "lmrec" / "v1" / fresh.name
        assert checked_in.is_file(), f"{checked_in} missing: run `make protos`"
        assert filecmp.cmp(fresh, checked_in, shallow=False), f"{checked_in.name} is stale: run `make protos`"
