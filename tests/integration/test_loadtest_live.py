"""`lmrec loadtest` against the live system: a short open-loop run finishes with every call answered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from lmrec_data.request_mix import RequestMix
from lmrec_tools.loadtest import run_load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the session system (ML-100K loaded) may be built here

RATE = 20.0
DURATION_S = 3.0
# Generous: this checks that every call is answered, not how fast; a slow CI box may queue a little.
TIMEOUT_S = 20.0


def test_open_loop_run_has_no_errors(lmrec_system):
    mix = RequestMix.from_dataset(seed=11)
    report = asyncio.run(run_load(lmrec_system.gateway_address, rate=RATE, duration=DURATION_S, mix=mix,
                                  timeout_s=TIMEOUT_S))
    expected = int(RATE * DURATION_S)
    assert report.scheduled == expected
    assert report.count == expected, report.summary_text()
    assert report.errors == 0, report.summary_text()
    assert report.status_counts == {"OK": expected}
    assert report.degraded <= report.count
    assert 0 < report.percentile_ms(50) <= report.percentile_ms(99) <= report.latency_ms()["max"]


def test_loadtest_command_prints_a_json_report(lmrec_system):
    result = subprocess.run(
        [sys.executable, "-m", "lmrec_tools.loadtest", "--target", lmrec_system.gateway_address, "--rate", "10",
         "--requests", "15", "--timeout", str(TIMEOUT_S), "--seed", "3", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["count"] == 15 and doc["errors"] == 0
    assert doc["statusCodeDistribution"] == {"OK": 15}
    assert doc["mode"] == "open-loop" and doc["offeredRate"] == 10.0
