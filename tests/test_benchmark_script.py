"""Smoke runs of scripts/benchmark.py: a --quick run end to end, and exit status 2 on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def run_benchmark(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_quick_run_writes_outputs(tmp_path):
    pytest.importorskip("torch")
    result = run_benchmark(
        "--quick", "--synthetic", "--repeats", "1", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0, f"benchmark failed:\n{result.stderr[-4000:]}"

    report = json.loads((tmp_path / "benchmark.json").read_text())
    workloads = {summary["workload"]: summary for summary in report["workloads"]}
    assert list(workloads) == ["linear epoch", "evaluate", "kNN L2, k = 10", "kNN L1, k = 10"]
    assert (tmp_path / "benchmark.png").stat().st_size > 0
    for name, summary in workloads.items():
        timed = [row for row in summary["variants"] if "median_s" in row]
        assert any(row["framework"] == "jaxclf" for row in timed), f"{name}: jaxclf did not run"
        assert any(row["framework"] == "torch" for row in timed), f"{name}: PyTorch did not run"
        assert all(row["median_s"] > 0 for row in timed), f"{name}: {timed}"
        assert f"| {timed[0]['variant']} |" in result.stdout, f"{name}: no table row on stdout"

    # Same weights give the same predictions; exact kNN explains every list
    # that differs from PyTorch's. On random labels the accuracies after one
    # epoch are chance, so the linear check is not asserted here.
    assert workloads["evaluate"]["agreement_ok"], workloads["evaluate"]["agreement"]
    assert workloads["kNN L2, k = 10"]["agreement_ok"], workloads["kNN L2, k = 10"]["agreement"]
    assert workloads["kNN L1, k = 10"]["agreement_ok"], workloads["kNN L1, k = 10"]["agreement"]


def test_missing_torch_exits_2(tmp_path):
    hidden = tmp_path / "hidden" / "torch"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("torch is hidden by this test")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hidden")}

    result = run_benchmark("--quick", "--synthetic", "--output-dir", str(tmp_path), env=env)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "PyTorch is not installed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--repeats", "0"], "--repeats"),
        (["--torch-l1-queries", "-5"], "--torch-l1-queries"),
        (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**70)], "--seed"),
    ],
)
def test_invalid_argument_exits_2(tmp_path, arguments, named):
    result = run_benchmark("--quick", "--synthetic", "--output-dir", str(tmp_path), *arguments)

    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr
    assert "Traceback" not in result.stderr
