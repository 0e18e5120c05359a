"""Tests of saving and restoring train states with orbax."""

import jax
import numpy as np
import pytest

from jaxclf.checkpoint import (
    latest_epoch,
    read_metadata,
    restore_checkpoint,
    restore_params,
    save_checkpoint,
)
from jaxclf.linear import LinearClassifier
from jaxclf.training import create_train_state, make_optimizer, train_step


def trained_state(num_classes: int = 10, weight_decay: float = 0.0):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, 8).astype(np.int32)
    model = LinearClassifier(num_classes=num_classes, initializer="torch")
    state = create_train_state(
        jax.random.key(0), model, make_optimizer(0.01, weight_decay=weight_decay)
    )
    state, _ = train_step(state, images, labels)
    return state


def fresh_state(num_classes: int = 10, weight_decay: float = 0.0):
    model = LinearClassifier(num_classes=num_classes)
    return create_train_state(jax.random.key(7), model, make_optimizer(0.01, weight_decay=weight_decay))


def test_round_trip_is_bit_exact(tmp_path):
    state = trained_state()
    save_checkpoint(tmp_path, state, epoch=3, metadata={"config": {"learning_rate": 0.01}})

    restored, metadata = restore_checkpoint(tmp_path, fresh_state())

    assert int(restored.step) == int(state.step) == 1
    for saved_leaf, restored_leaf in zip(
        jax.tree.leaves((state.params, state.opt_state)),
        jax.tree.leaves((restored.params, restored.opt_state)),
    ):
        np.testing.assert_array_equal(np.asarray(restored_leaf), np.asarray(saved_leaf))
    assert metadata == {"config": {"learning_rate": 0.01}, "epoch": 3}


def test_latest_epoch_and_choice_of_epoch(tmp_path):
    assert latest_epoch(tmp_path / "missing") is None
    first, second = trained_state(), fresh_state()
    save_checkpoint(tmp_path, first, epoch=1)
    save_checkpoint(tmp_path, second, epoch=2)

    assert latest_epoch(tmp_path) == 2
    assert read_metadata(tmp_path)["epoch"] == 2
    params, metadata = restore_params(tmp_path, fresh_state().params, epoch=1)
    np.testing.assert_array_equal(np.asarray(params["kernel"]), np.asarray(first.params["kernel"]))
    assert metadata["epoch"] == 1


def test_existing_epoch_not_overwritten(tmp_path):
    save_checkpoint(tmp_path, fresh_state(), epoch=1)
    with pytest.raises(FileExistsError, match="epoch 1 already exists"):
        save_checkpoint(tmp_path, fresh_state(), epoch=1)


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        restore_checkpoint(tmp_path / "nothing", fresh_state())
    save_checkpoint(tmp_path, fresh_state(), epoch=1)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of epoch 5 .* saved epochs: \[1\]"):
        restore_checkpoint(tmp_path, fresh_state(), epoch=5)


def test_other_model_rejected(tmp_path):
    save_checkpoint(tmp_path, trained_state(num_classes=10), epoch=1)
    with pytest.raises(ValueError, match=r"params/\w+ has shape \(10,.*\) in the checkpoint but \(5,"):
        restore_checkpoint(tmp_path, fresh_state(num_classes=5))
    with pytest.raises(ValueError, match="shape"):
        restore_params(tmp_path, fresh_state(num_classes=5).params)


def test_other_optimizer_rejected(tmp_path):
    save_checkpoint(tmp_path, trained_state(weight_decay=0.0), epoch=1)
    with pytest.raises(ValueError, match="does not match the model and optimiser"):
        restore_checkpoint(tmp_path, fresh_state(weight_decay=0.01))


def test_negative_epoch_rejected(tmp_path):
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        save_checkpoint(tmp_path, fresh_state(), epoch=-1)
    assert not (tmp_path / "-1").exists()


def test_junk_step_folder_is_clear(tmp_path):
    save_checkpoint(tmp_path, trained_state(), epoch=1)
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "data").write_text("junk")
    with pytest.raises(ValueError, match="is not a checkpoint written by save_checkpoint"):
        read_metadata(tmp_path)
    assert read_metadata(tmp_path, epoch=1)["epoch"] == 1
