"""End-to-end runs of train.py, evaluate.py and plot_templates.py on mock CIFAR-10.

tfds' mock_data serves random images, so these runs check that the scripts
work and write their files, not how well they classify. The scripts run
in-process through their `main(argv)`, with no data on disk and matplotlib
without a display.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from jaxclf.checkpoint import restore_params

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
NUM_MOCK_EXAMPLES = 48


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"jaxclf_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def mock_cifar10(tmp_path):
    """An empty data folder that tfds.testing.mock_data fills with random CIFAR-10."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
        yield data_dir


def train_arguments(data_dir: Path, output_dir: Path, epochs: int) -> list[str]:
    return [
        "--data-dir", str(data_dir),
        "--output-dir", str(output_dir),
        "--epochs", str(epochs),
        "--batch-size", "16",
        "--validation-size", "8",
        "--seed", "3",
    ]  # fmt: skip


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > 1000, f"{path} is suspiciously small"


def test_train_evaluate_and_plot(mock_cifar10, tmp_path, capsys):
    output_dir = tmp_path / "run"
    assert load_script("train").main(train_arguments(mock_cifar10, output_dir, epochs=2)) == 0

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    assert "validation_accuracy" in metrics["history"][0]
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert len(metrics["test"]["per_class_accuracy"]) == 10
    assert_png(output_dir / "training_curves.png")
    assert sorted(path.name for path in (output_dir / "checkpoints").iterdir()) == ["1", "2"]
    logged = capsys.readouterr().err
    assert "JAX backend" in logged
    assert "epoch 2/2: train loss" in logged
    assert "test accuracy" in logged

    evaluation_dir = tmp_path / "evaluation"
    evaluate_arguments = [
        "--checkpoint-dir", str(output_dir / "checkpoints"),
        "--data-dir", str(mock_cifar10),
        "--output-dir", str(evaluation_dir),
    ]  # fmt: skip
    assert load_script("evaluate").main(evaluate_arguments) == 0
    report = json.loads((evaluation_dir / "evaluation.json").read_text())
    assert report["epoch"] == 2
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert np.sum(report["confusion_matrix"]) == NUM_MOCK_EXAMPLES
    assert_png(evaluation_dir / "confusion_matrix.png")

    plot_templates = load_script("plot_templates")
    for flags, name in (([], "own.png"), (["--shared-scale"], "shared.png")):
        arguments = ["--checkpoint-dir", str(output_dir / "checkpoints"), "--output", str(tmp_path / name)]
        assert plot_templates.main(arguments + flags) == 0
        assert_png(tmp_path / name)


def test_resumed_script_run_equals_uninterrupted(mock_cifar10, tmp_path):
    train = load_script("train")
    assert train.main(train_arguments(mock_cifar10, tmp_path / "whole", epochs=3)) == 0
    assert train.main(train_arguments(mock_cifar10, tmp_path / "parts", epochs=1)) == 0
    resumed = train_arguments(mock_cifar10, tmp_path / "parts", epochs=3) + ["--resume"]
    assert train.main(resumed) == 0

    whole_metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    parts_metrics = json.loads((tmp_path / "parts" / "metrics.json").read_text())
    assert parts_metrics["history"] == whole_metrics["history"]

    template = {"kernel": np.zeros((10, 3072), np.float32), "bias": np.zeros(10, np.float32)}
    whole_params, _ = restore_params(tmp_path / "whole" / "checkpoints", template)
    parts_params, _ = restore_params(tmp_path / "parts" / "checkpoints", template)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(np.asarray(parts_params[name]), np.asarray(whole_params[name]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning-rate", "0"], "--learning-rate must be greater than 0"),
        (["--epochs", "0"], "--epochs must be greater than 0"),
        (["--batch-size", "-2"], "--batch-size must be greater than 0"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
        (["--l2", "inf"], "--l2 must be a finite number"),
        (["--validation-size", "-1"], "--validation-size must be 0 or more"),
        (["--seed", "99999999999999999999"], "--seed must be an integer from 0 to 4294967295"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295"),
        (["--devices", "1000"], "--devices must be between 1 and the"),
    ],
)
def test_train_bad_settings_exit_2(tmp_path, capsys, flags, message):
    assert load_script("train").main(["--output-dir", str(tmp_path)] + flags) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert message in errors[0]


@pytest.mark.parametrize("script", ["evaluate", "plot_templates"])
def test_missing_checkpoint_exits_2(tmp_path, capsys, script):
    assert load_script(script).main(["--checkpoint-dir", str(tmp_path / "none")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "no checkpoint found" in errors[0]


@pytest.mark.parametrize("script", ["train", "evaluate", "plot_templates"])
def test_help_states_defaults(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main(["--help"])
    assert exit_info.value.code == 0
    assert "default" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["train", "evaluate"])
def test_output_dir_file_exits_2(tmp_path, capsys, script):
    existing_file = tmp_path / "file"
    existing_file.write_text("")
    assert load_script(script).main(["--output-dir", str(existing_file)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert f"--output-dir {existing_file} is an existing file" in errors[0]


def test_output_dir_uncreatable_exits_2(tmp_path, capsys):
    existing_file = tmp_path / "file"
    existing_file.write_text("")
    assert load_script("train").main(["--output-dir", str(existing_file / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "--output-dir" in errors[0]
    assert "cannot create the folder" in errors[0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("templates.jpg", "must end in .png"),
        ("folder.png", "is an existing folder"),
        ("file/templates.png", "is an existing file"),
    ],
)
def test_plot_output_checked_first(tmp_path, capsys, name, message):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    arguments = ["--checkpoint-dir", str(tmp_path / "none"), "--output", str(tmp_path / name)]
    assert load_script("plot_templates").main(arguments) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert message in errors[0]


@pytest.mark.parametrize("script", ["evaluate", "plot_templates"])
def test_junk_checkpoint_folder_exits_2(tmp_path, capsys, script):
    junk = tmp_path / "checkpoints" / "3"
    junk.mkdir(parents=True)
    (junk / "data").write_text("junk")
    arguments = ["--checkpoint-dir", str(tmp_path / "checkpoints")]
    if script == "evaluate":
        arguments += ["--output-dir", str(tmp_path / "evaluation")]
    else:
        arguments += ["--output", str(tmp_path / "templates.png")]
    assert load_script(script).main(arguments) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert f"{junk} is not a checkpoint" in errors[0]


def test_resume_with_fewer_epochs_exits_2(mock_cifar10, tmp_path, capsys):
    train = load_script("train")
    assert train.main(train_arguments(mock_cifar10, tmp_path / "run", epochs=2)) == 0
    metrics_before = (tmp_path / "run" / "metrics.json").read_text()
    resumed = train_arguments(mock_cifar10, tmp_path / "run", epochs=1) + ["--resume"]
    assert train.main(resumed) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "pass --epochs 2 or more" in errors[0]
    assert (tmp_path / "run" / "metrics.json").read_text() == metrics_before


def test_huge_batch_size_trains_one_step(mock_cifar10, tmp_path):
    arguments = train_arguments(mock_cifar10, tmp_path / "run", epochs=1)
    arguments[arguments.index("--batch-size") + 1] = "1000000000"
    assert load_script("train").main(arguments) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1
