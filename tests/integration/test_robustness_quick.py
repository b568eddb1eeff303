"""The robustness runner's quick version (bench/robustness.py --quick, issue 12): every scenario
(fuzzing, pre-authentication flood, backend faults, reload storm, worker loss, stalled readers,
churn) against a running pggate, each at a small size; every row must pass."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUNNER = Path(__file__).resolve().parents[2] / "bench" / "robustness.py"


def test_quick_robustness_run_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    scenarios = (
        "fuzz",
        "flood",
        "backend_faults",
        "reload_storm",
        "worker_loss",
        "slow_readers",
        "churn",
    )
    for scenario in scenarios:
        rows = re.findall(rf"^\| {scenario} \|.*\| (\w+) \|$", proc.stdout, re.M)
        assert rows == ["pass"], f"{scenario}: {rows}\n{report}"
