"""End-to-end runs of scripts/knn.py on mock CIFAR-10 and on bad arguments.

tfds' mock_data serves random images, so these runs check that the script
works and writes its files, not how well it classifies.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "knn.py"
NUM_MOCK_EXAMPLES = 40


@pytest.fixture(scope="module")
def knn_script():
    spec = importlib.util.spec_from_file_location("jaxclf_script_knn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def mock_cifar10(tmp_path, monkeypatch):
    """An empty data folder that tfds.testing.mock_data fills with random CIFAR-10."""
    import tensorflow_datasets as tfds

    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("JAXCLF_DATA_DIR", raising=False)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
        yield data_dir


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def test_evaluate_writes_results_and_grid(knn_script, mock_cifar10, tmp_path):
    output_dir = tmp_path / "evaluate"
    arguments = ["--data-dir", str(mock_cifar10), "--output-dir", str(output_dir), "--k", "3",
                 "--metric", "l1", "--query-chunk", "16", "--grid-rows", "3"]
    assert knn_script.main(arguments) == 0

    results = json.loads((output_dir / "results.json").read_text())
    assert results["mode"] == "evaluate"
    assert results["num_test"] == NUM_MOCK_EXAMPLES
    assert len(results["predictions"]) == NUM_MOCK_EXAMPLES
    # mock_data serves the same images as train and test, so 1-NN would be
    # perfect; with k=3 the accuracy is only bounded.
    assert 0.0 <= results["accuracy"] <= 1.0
    assert_png(output_dir / "neighbors.png")


def test_cross_validate_writes_results_and_plot(knn_script, mock_cifar10, tmp_path):
    output_dir = tmp_path / "cv"
    arguments = ["--data-dir", str(mock_cifar10), "--output-dir", str(output_dir),
                 "--cross-validate", "--ks", "1,2,5", "--metrics", "l1,l2", "--folds", "4",
                 "--subset", "32"]
    assert knn_script.main(arguments) == 0

    results = json.loads((output_dir / "results.json").read_text())
    assert results["num_train"] == 32
    assert np.shape(results["mean"]) == (2, 3)
    assert results["best_metric"] in ("l1", "l2")
    assert results["best_k"] in (1, 2, 5)
    assert_png(output_dir / "cross_validation.png")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--k", "0"], "--k must be greater than 0, got 0"),
        (["--subset", "10", "--k", "11"], "between 1 and the database size 10, got k=11"),
        (["--cross-validate", "--metrics", "l1,cosine"], "--metrics must list some of"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
        (["--cross-validate", "--seed", "99999999999999999999"], "--seed must be an integer from 0"),
        (["--grid-neighbors", "-1"], "--grid-neighbors must be 0 or more"),
        (["--folds", "1"], "--folds must be 2 or more"),
        (["--devices", "1000"], "--devices must be between 1 and the"),
        (["--cross-validate", "--subset", "3", "--folds", "4"], "--folds 4 is above the 3 training"),
    ],
)
def test_bad_values_log_one_error(knn_script, mock_cifar10, tmp_path, capfd, arguments, message):
    arguments = ["--data-dir", str(mock_cifar10), "--output-dir", str(tmp_path / "out"),
                 "--grid-rows", "0", *arguments]
    assert knn_script.main(arguments) == 2
    stderr = capfd.readouterr().err
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr
    assert message in errors[0]
    assert "Traceback" not in stderr


def test_malformed_option_exits_2_with_one_line():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--ks", "1,x"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "comma-separated list of int, got '1,x'" in lines[0]


def test_help_names_units_and_defaults():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--help"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    help_text = " ".join(completed.stdout.split())
    assert "in MiB (default: 256)" in help_text
    assert "--cross-validate" in completed.stdout


def test_output_dir_file_logs_one_error(knn_script, tmp_path, capfd):
    existing_file = tmp_path / "file"
    existing_file.write_text("")
    assert knn_script.main(["--output-dir", str(existing_file)]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert f"--output-dir {existing_file} is an existing file" in errors[0]


def test_zero_grid_neighbors_skips_figure(knn_script, mock_cifar10, tmp_path, capfd):
    output_dir = tmp_path / "evaluate"
    arguments = ["--data-dir", str(mock_cifar10), "--output-dir", str(output_dir),
                 "--subset", "1000000", "--grid-neighbors", "0"]
    assert knn_script.main(arguments) == 0
    assert (output_dir / "results.json").is_file()
    assert not (output_dir / "neighbors.png").exists()
    assert "--subset 1000000 is above the" in capfd.readouterr().err
