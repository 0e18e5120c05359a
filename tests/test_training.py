"""Tests of the optimiser, the compiled step and epoch, evaluation and fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxclf.training as training
from jaxclf.data import load_cifar10, normalize
from jaxclf.linear import LinearClassifier, cross_entropy_loss
from jaxclf.training import (
    create_train_state,
    epoch_key,
    evaluate,
    fit,
    make_optimizer,
    train_epoch,
    train_step,
)


def random_data(num_examples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, num_examples).astype(np.int32)
    return images, labels


def new_state(learning_rate: float = 0.01, *, weight_decay: float = 0.0, seed: int = 0):
    model = LinearClassifier(initializer="torch")
    tx = make_optimizer(learning_rate, momentum=0.9, weight_decay=weight_decay)
    return create_train_state(jax.random.key(seed), model, tx)


def numpy_rows(images: np.ndarray) -> np.ndarray:
    rows = images.reshape(images.shape[0], -1).astype(np.float64)
    return (rows / 255.0 - 0.5) / 0.5


def numpy_gradients(kernel, bias, rows, labels):
    """Float64 mean cross-entropy gradient of a linear layer `rows @ kernel.T + bias`."""
    logits = rows @ kernel.T + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(len(labels)), labels] -= 1.0
    dlogits = probs / len(labels)
    return dlogits.T @ rows, dlogits.sum(axis=0)


@pytest.mark.parametrize(
    "weight_decay, expected",
    [(0.01, [0.899, 0.707201, 0.433875]), (0.0, [0.9, 0.71, 0.439])],
)
def test_sgd_follows_torch_update(weight_decay, expected):
    tx = make_optimizer(0.1, momentum=0.9, weight_decay=weight_decay)
    weight = jnp.array([1.0], jnp.float32)
    opt_state = tx.init(weight)

    history = []
    for _ in range(3):
        updates, opt_state = tx.update(jnp.array([1.0], jnp.float32), opt_state, weight)
        weight = optax.apply_updates(weight, updates)
        history.append(float(weight[0]))
    np.testing.assert_allclose(history, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"learning_rate": 0.0}, "learning_rate must be a positive"),
        ({"learning_rate": -0.1}, "learning_rate must be a positive"),
        ({"learning_rate": 0.1, "momentum": 1.0}, "momentum must be in"),
        ({"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay must be"),
    ],
)
def test_optimizer_rejects_bad_settings(arguments, message):
    learning_rate = arguments.pop("learning_rate")
    with pytest.raises(ValueError, match=message):
        make_optimizer(learning_rate, **arguments)


def test_train_step_matches_numpy_gradient_step():
    images, labels = random_data(16)
    state = new_state(learning_rate=0.05, weight_decay=0.01)
    kernel = np.asarray(state.params["kernel"], np.float64)
    bias = np.asarray(state.params["bias"], np.float64)

    state, metrics = train_step(state, images, labels)

    grad_kernel, grad_bias = numpy_gradients(kernel, bias, numpy_rows(images), labels)
    # First momentum step: buffer = grad + decay * w, w -= lr * buffer.
    expected_kernel = kernel - 0.05 * (grad_kernel + 0.01 * kernel)
    expected_bias = bias - 0.05 * (grad_bias + 0.01 * bias)
    np.testing.assert_allclose(np.asarray(state.params["kernel"]), expected_kernel, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(state.params["bias"]), expected_bias, rtol=1e-4, atol=1e-7)
    assert int(state.step) == 1
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_epoch_traced_once_and_loss_exact(monkeypatch):
    images, labels = random_data(10, seed=4)
    model = LinearClassifier(initializer="torch")
    # A zero update keeps the parameters fixed, so the epoch's mean loss must
    # equal the loss of those parameters over the same 10 examples.
    state = create_train_state(jax.random.key(0), model, optax.set_to_zero())

    traces = []
    original = training._apply_batch

    def counting_apply_batch(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "_apply_batch", counting_apply_batch)
    training._train_epoch_jit.clear_cache()

    for epoch in range(2):
        state, metrics = train_epoch(
            state, jnp.asarray(images), jnp.asarray(labels), epoch_key(0, epoch), batch_size=4
        )
    assert len(traces) == 1, f"epoch step traced {len(traces)} times for batches of 4, 4 and 2"

    logits = model.apply({"params": state.params}, jnp.asarray(images))
    expected_loss = cross_entropy_loss(logits, jnp.asarray(labels))
    np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-6)
    expected_accuracy = np.mean(np.argmax(np.asarray(logits), axis=1) == labels)
    np.testing.assert_allclose(float(metrics["accuracy"]), expected_accuracy, rtol=1e-6)


def test_epoch_equals_loop_of_steps():
    images, labels = random_data(70, seed=5)
    key = epoch_key(3, 0)
    batch_size = 16

    epoch_state, _ = train_epoch(new_state(), images, labels, key, batch_size=batch_size)

    order = np.asarray(training._permutation(key, len(labels)))
    assert sorted(order.tolist()) == list(range(len(labels))), "shuffle is not a permutation"
    loop_state = new_state()
    for start in range(0, len(labels), batch_size):
        batch = order[start : start + batch_size]
        loop_state, _ = train_step(loop_state, images[batch], labels[batch])

    assert int(epoch_state.step) == int(loop_state.step) == 5
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(
            np.asarray(epoch_state.params[name]),
            np.asarray(loop_state.params[name]),
            rtol=1e-5,
            atol=1e-7,
            err_msg=f"{name} after one epoch differs from five train_step calls",
        )


@pytest.mark.parametrize("num_examples", [1, 2, 3, 17, 64, 257, 1000, 50_000])
def test_shuffle_is_permutation(num_examples):
    order = np.asarray(training._permutation(jax.random.key(num_examples), num_examples))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(num_examples))


def test_shuffle_spreads_positions_evenly():
    # Over 2000 keys, each of 10 examples should land at each position about
    # 200 times. A binomial count stays within 200 +- 60 with probability
    # above 1 - 1e-5 per cell.
    keys = jax.random.split(jax.random.key(0), 2000)
    orders = np.asarray(jax.jit(jax.vmap(lambda key: training._permutation(key, 10)))(keys))
    counts = np.stack([np.bincount(orders[:, position], minlength=10) for position in range(10)])
    assert counts.min() > 140, counts
    assert counts.max() < 260, counts


def test_epoch_shuffle_depends_on_key():
    orders = [np.asarray(training._permutation(epoch_key(0, epoch), 1000)) for epoch in range(2)]
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], np.asarray(training._permutation(epoch_key(0, 0), 1000)))


def test_hinge_training_lowers_loss():
    images, labels = random_data(256, seed=6)
    labels = (images[:, :16].mean(axis=(1, 2, 3)) > 127).astype(np.int32)
    state = new_state(learning_rate=0.001)

    losses = []
    for epoch in range(5):
        state, metrics = train_epoch(state, images, labels, epoch_key(0, epoch), loss="hinge", l2=1e-3)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0], f"hinge loss did not fall: {losses}"


def test_evaluate_matches_numpy_forward():
    images, labels = random_data(2345, seed=7)
    state = new_state()
    training._evaluate_jit.clear_cache()

    scores = evaluate(state, images, labels, batch_size=1000)

    logits = numpy_rows(images) @ np.asarray(state.params["kernel"], np.float64).T
    logits += np.asarray(state.params["bias"], np.float64)
    np.testing.assert_allclose(np.asarray(scores["logits"]), logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(scores["predictions"]), np.argmax(logits, axis=1))
    np.testing.assert_allclose(
        float(scores["accuracy"]), np.mean(np.argmax(logits, axis=1) == labels), rtol=1e-6
    )
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    log_probs -= logits.max(1, keepdims=True)
    np.testing.assert_allclose(
        float(scores["loss"]), -np.mean(log_probs[np.arange(len(labels)), labels]), rtol=1e-5
    )

    evaluate(state, images, labels, batch_size=1000)
    assert training._evaluate_jit._cache_size() == 1, "evaluate recompiled for the same shapes"


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.zeros((4, 3072), np.uint8), np.zeros(4, np.int32), "must have shape"),
        (np.zeros((4, 32, 32, 3), np.int64), np.zeros(4, np.int32), "must be uint8"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 10, 2], np.int32), r"labels\[2\] = 10"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, -1, 1, 2], np.int32), r"labels\[1\] = -1"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3, np.int32), "labels must have shape"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.float32), "integer array"),
        (np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, np.int32), "kernel expects 3072"),
        (np.full((4, 32, 32, 3), np.nan, np.float32), np.zeros(4, np.int32), "NaN or infinite"),
        (np.full((4, 32, 32, 3), -np.inf, np.float32), np.zeros(4, np.int32), "NaN or infinite"),
        (np.full((4, 32, 32, 3), 255.0, np.float32), np.zeros(4, np.int32), "raw 0..255 pixels"),
    ],
)
def test_bad_input_rejected_before_compiling(images, labels, message):
    training._train_epoch_jit.clear_cache()
    state = new_state()
    for call in (
        lambda: train_epoch(state, images, labels, epoch_key(0, 0)),
        lambda: train_step(state, images, labels),
        lambda: evaluate(state, images, labels),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    assert training._train_epoch_jit._cache_size() == 0


@pytest.mark.parametrize("batch_size", [0, -4, 2.5])
def test_bad_batch_size_rejected(batch_size):
    images, labels = random_data(8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train_epoch(new_state(), images, labels, epoch_key(0, 0), batch_size=batch_size)


def test_normalised_float_images_accepted():
    images, labels = random_data(8)
    floats = np.asarray(normalize(images))
    _, metrics = train_step(new_state(), floats, labels)
    assert np.isfinite(float(metrics["loss"])), metrics


@pytest.mark.parametrize("batch_size", [8, 9, 10**9])
def test_batch_size_above_data_clamped(batch_size):
    images, labels = random_data(8)
    state, metrics = train_epoch(new_state(), images, labels, epoch_key(0, 0), batch_size=batch_size)
    assert int(state.step) == 1, "a batch size >= N must give one step"
    scores = evaluate(state, images, labels, batch_size=batch_size)
    assert scores["logits"].shape == (8, 10)


@pytest.mark.parametrize("key", [0, np.uint32(3), jax.random.split(jax.random.key(0), 2)])
def test_non_key_rejected(key):
    images, labels = random_data(8)
    with pytest.raises(ValueError, match="pass jax.random.key"):
        train_epoch(new_state(), images, labels, key)


@pytest.mark.parametrize("seed, epoch", [(-1, 0), (2**32, 0), (0, -1), (1.5, 0)])
def test_epoch_key_range_checked(seed, epoch):
    with pytest.raises(ValueError, match="must be an integer in"):
        epoch_key(seed, epoch)


def test_list_labels_and_numpy_l2_accepted():
    images, labels = random_data(4)
    list_state, list_metrics = train_step(new_state(), images, labels.tolist(), l2=np.float32(0.1))
    array_state, array_metrics = train_step(new_state(), images, labels, l2=0.1)
    np.testing.assert_allclose(
        np.asarray(list_state.params["kernel"]), np.asarray(array_state.params["kernel"]),
        rtol=1e-6, atol=1e-7, err_msg="list labels and np.float32 l2 must train like arrays",
    )
    assert float(list_metrics["loss"]) == pytest.approx(float(array_metrics["loss"]), rel=1e-6)


def test_resume_with_fewer_epochs_rejected(tmp_path):
    images, labels = random_data(8)
    fit(new_state(), images, labels, epochs=2, batch_size=4, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="pass epochs >= 2"):
        fit(new_state(), images, labels, epochs=1, batch_size=4, checkpoint_dir=tmp_path, resume=True)


def test_bad_epochs_and_loss_rejected():
    images, labels = random_data(8)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(new_state(), images, labels, epochs=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_step(new_state(), images, labels, loss="squared")


def assert_states_identical(first, second):
    assert int(first.step) == int(second.step)
    first_leaves = jax.tree.leaves((first.params, first.opt_state))
    second_leaves = jax.tree.leaves((second.params, second.opt_state))
    assert len(first_leaves) == len(second_leaves)
    for first_leaf, second_leaf in zip(first_leaves, second_leaves):
        np.testing.assert_array_equal(np.asarray(first_leaf), np.asarray(second_leaf))


def test_resumed_fit_equals_uninterrupted(tmp_path):
    images, labels = random_data(300, seed=8)
    settings = {"seed": 5, "batch_size": 32, "config": {"learning_rate": 0.01}}

    whole, whole_history = fit(new_state(), images, labels, epochs=4, **settings)

    first, _ = fit(new_state(), images, labels, epochs=2, checkpoint_dir=tmp_path, **settings)
    resumed, resumed_history = fit(
        new_state(seed=99), images, labels, epochs=4, checkpoint_dir=tmp_path, resume=True, **settings
    )
    assert_states_identical(resumed, whole)
    assert [record["epoch"] for record in resumed_history] == [1, 2, 3, 4]
    assert resumed_history == whole_history


def test_resume_rejects_other_settings(tmp_path):
    images, labels = random_data(40)
    fit(new_state(), images, labels, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size: checkpoint 8, this run 16"):
        fit(new_state(), images, labels, epochs=2, batch_size=16, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="already contains checkpoints"):
        fit(new_state(), images, labels, epochs=2, batch_size=8, checkpoint_dir=tmp_path)


def test_resume_without_checkpoint_fails(tmp_path):
    images, labels = random_data(8)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        fit(new_state(), images, labels, epochs=1, checkpoint_dir=tmp_path / "empty", resume=True)


@pytest.fixture(scope="module")
def cifar10(real_data_dir):
    return load_cifar10(real_data_dir, validation_size=0)


@pytest.mark.real_data
def test_lesson_recipe_reaches_38_percent(cifar10):
    state = create_train_state(
        jax.random.key(0), LinearClassifier(), make_optimizer(0.001, momentum=0.9)
    )
    state, history = fit(state, cifar10.train.images, cifar10.train.labels, epochs=10, seed=0)

    scores = evaluate(state, cifar10.test.images, cifar10.test.labels)
    assert float(scores["accuracy"]) >= 0.38, f"test accuracy {float(scores['accuracy']):.4f}"
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.real_data
def test_real_data_resume_is_bit_exact(cifar10, tmp_path):
    images, labels = cifar10.train.images[:20000], cifar10.train.labels[:20000]

    def initial_state():
        return create_train_state(jax.random.key(0), LinearClassifier(), make_optimizer(0.001))

    whole, _ = fit(initial_state(), images, labels, epochs=3, seed=1)
    fit(initial_state(), images, labels, epochs=1, seed=1, checkpoint_dir=tmp_path)
    resumed, _ = fit(initial_state(), images, labels, epochs=3, seed=1, checkpoint_dir=tmp_path, resume=True)
    assert_states_identical(resumed, whole)


def test_train_step_compiles_once_from_fresh_state():
    images, labels = random_data(8)
    training._train_step_jit.clear_cache()

    state = new_state()
    for _ in range(3):
        state, _ = train_step(state, images, labels)

    assert training._train_step_jit._cache_size() == 1, "train_step recompiled after step 0"
