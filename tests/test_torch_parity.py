"""jaxclf against PyTorch on identical weights, batches and data.

- Training: from the same initial weights (PyTorch's `nn.Linear` rule), over
  the same batches in the same order, every `train_step` loss and the final
  parameters match `torch.optim.SGD` with momentum, with and without weight
  decay.
- Evaluation: logits, loss and accuracy on the same weights match
  `torch.nn.Linear`.
- kNN: neighbours and votes match a float64 `torch.cdist` search on
  integer-valued pixels, where both sides are exact.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxclf.knn import nearest_neighbors, predict  # noqa: E402
from jaxclf.linear import LinearClassifier  # noqa: E402
from jaxclf.training import create_train_state, evaluate, make_optimizer, train_step  # noqa: E402

NUM_CLASSES = 10
NUM_STEPS = 120
BATCH_SIZE = 32
# Relative tolerance of the parity checks. Parameters also need an absolute
# one, because float32 rounding of a gradient sum is relative to the summed
# terms, not to the result. A weight near zero built from larger updates
# therefore differs by a few ulps of the largest weights: up to 4e-8 was
# measured, with weights up to 0.15. 1e-7 is about ten such ulps and far
# below the 2e-4 by which weight decay applied after the momentum, not
# before it, moves a weight in the mildest case below.
RTOL = 1e-5
PARAMS_ATOL = 1e-7


def normalized_rows(images: np.ndarray) -> np.ndarray:
    """PyTorch-side input: `(x / 255 - 0.5) / 0.5` in float32, NHWC-flattened."""
    pixels = images.reshape(images.shape[0], -1).astype(np.float32)
    return (pixels / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


def torch_linear(kernel: np.ndarray, bias: np.ndarray):
    model = torch.nn.Linear(kernel.shape[1], kernel.shape[0])
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(np.array(kernel)))
        model.bias.copy_(torch.from_numpy(np.array(bias)))
    return model


def jaxclf_state(learning_rate: float, weight_decay: float, seed: int = 0):
    model = LinearClassifier(num_classes=NUM_CLASSES, initializer="torch")
    tx = make_optimizer(learning_rate, momentum=0.9, weight_decay=weight_decay)
    return create_train_state(jax.random.key(seed), model, tx)


@pytest.fixture(scope="module")
def training_batches():
    """NUM_STEPS batches of random pixels, the last one partial as with drop_last=False."""
    rng = np.random.default_rng(1)
    num_examples = NUM_STEPS * BATCH_SIZE - BATCH_SIZE // 2
    images = rng.integers(0, 256, size=(num_examples, 32, 32, 3), dtype=np.uint8)
    # Labels of a random linear teacher, so that a linear model can learn
    # them and the losses fall.
    teacher = rng.standard_normal((32 * 32 * 3, NUM_CLASSES))
    labels = np.argmax(normalized_rows(images) @ teacher, axis=1).astype(np.int32)
    order = rng.permutation(num_examples)
    return [
        (images[order[start : start + BATCH_SIZE]], labels[order[start : start + BATCH_SIZE]])
        for start in range(0, num_examples, BATCH_SIZE)
    ]


def test_initialization_follows_torch_rule():
    state = jaxclf_state(0.001, 0.0)
    kernel = np.asarray(state.params["kernel"])
    bias = np.asarray(state.params["bias"])
    bound = 1.0 / np.sqrt(32 * 32 * 3)

    assert kernel.shape == (NUM_CLASSES, 3072), "kernel is stored [num_classes, features] like nn.Linear"
    assert bias.shape == (NUM_CLASSES,)
    assert np.all(np.abs(kernel) <= bound), f"kernel outside +-1/sqrt(fan_in) = {bound}"
    assert np.all(np.abs(bias) <= bound), f"bias outside +-1/sqrt(fan_in) = {bound}"
    # A uniform distribution over +-bound has standard deviation bound/sqrt(3).
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.02)


@pytest.mark.parametrize(
    "learning_rate, weight_decay",
    [(0.001, 0.0), (0.001, 0.01), (0.01, 0.0), (0.01, 0.05)],
)
def test_sgd_momentum_matches_torch(training_batches, learning_rate, weight_decay):
    state = jaxclf_state(learning_rate, weight_decay)
    initial_kernel = np.asarray(state.params["kernel"])
    initial_bias = np.asarray(state.params["bias"])
    model = torch_linear(initial_kernel, initial_bias)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=weight_decay
    )

    jax_losses, torch_losses = [], []
    for images, labels in training_batches:
        state, metrics = train_step(state, images, labels)
        jax_losses.append(float(metrics["loss"]))

        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(normalized_rows(images))), torch.from_numpy(labels.astype(np.int64))
        )
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    assert len(jax_losses) >= 100
    np.testing.assert_allclose(
        jax_losses, torch_losses, rtol=RTOL, err_msg="per-step losses differ from torch.optim.SGD"
    )
    assert np.mean(jax_losses[-10:]) < np.mean(jax_losses[:10]), "training made no progress"
    np.testing.assert_allclose(
        np.asarray(state.params["kernel"]),
        model.weight.detach().numpy(),
        rtol=RTOL,
        atol=PARAMS_ATOL,
        err_msg="kernel after training differs from torch.optim.SGD's weight",
    )
    np.testing.assert_allclose(
        np.asarray(state.params["bias"]),
        model.bias.detach().numpy(),
        rtol=RTOL,
        atol=PARAMS_ATOL,
        err_msg="bias after training differs from torch.optim.SGD's",
    )
    moved = np.max(np.abs(np.asarray(state.params["kernel"]) - initial_kernel))
    assert moved > 1000 * PARAMS_ATOL, "parameters barely moved, so the check is vacuous"


def test_evaluation_matches_torch():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(1000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=1000).astype(np.int32)
    state = jaxclf_state(0.001, 0.0, seed=3)
    model = torch_linear(np.asarray(state.params["kernel"]), np.asarray(state.params["bias"]))

    with torch.no_grad():
        torch_logits = model(torch.from_numpy(normalized_rows(images)))
        torch_loss = torch.nn.functional.cross_entropy(
            torch_logits, torch.from_numpy(labels.astype(np.int64))
        ).item()
    torch_logits = torch_logits.numpy()
    # 1000 is not a multiple of the batch size, so the padded last batch counts.
    metrics = evaluate(state, images, labels, batch_size=64)
    jax_logits = np.asarray(metrics["logits"])

    np.testing.assert_allclose(jax_logits, torch_logits, rtol=RTOL, atol=1e-6, err_msg="logits differ")
    np.testing.assert_array_equal(np.asarray(metrics["predictions"]), np.argmax(torch_logits, 1))
    torch_accuracy = np.mean(np.argmax(torch_logits, 1) == labels)
    np.testing.assert_allclose(float(metrics["accuracy"]), torch_accuracy, rtol=0, atol=1e-7)
    np.testing.assert_allclose(float(metrics["loss"]), torch_loss, rtol=RTOL)


def torch_reference(queries: np.ndarray, database: np.ndarray, k: int, metric: str):
    """Distances and indices `[num_queries, k]` by float64 `torch.cdist`, ties to the lower index.

    Integer pixels make float64 exact here: squared L2 sums stay below 2^53
    (cdist's matrix-product form included) and L1 sums are integers.
    `torch.topk` leaves the order of equal distances unspecified, so a stable
    sort orders the indices, and topk's values must agree with it.
    """
    queries = torch.from_numpy(queries.reshape(queries.shape[0], -1).astype(np.float64))
    database = torch.from_numpy(database.reshape(database.shape[0], -1).astype(np.float64))
    distances = torch.cdist(queries, database, p=2.0 if metric == "l2" else 1.0)
    sorted_distances, indices = torch.sort(distances, dim=1, stable=True)
    top_values = torch.topk(distances, k, dim=1, largest=False, sorted=True).values
    np.testing.assert_array_equal(top_values.numpy(), sorted_distances[:, :k].numpy())
    return sorted_distances[:, :k].numpy(), indices[:, :k].numpy()


def torch_vote(neighbor_labels: np.ndarray) -> np.ndarray:
    """Majority label per row with `torch.argmax`, which picks the first (smallest) label on ties."""
    labels = torch.from_numpy(neighbor_labels.astype(np.int64))
    counts = torch.zeros(labels.shape[0], NUM_CLASSES).scatter_add_(1, labels, torch.ones(labels.shape))
    return torch.argmax(counts, dim=1).numpy()


def uniform_pixels(rng, num_queries, num_database):
    queries = rng.integers(0, 256, size=(num_queries, 32, 32, 3), dtype=np.uint8)
    database = rng.integers(0, 256, size=(num_database, 32, 32, 3), dtype=np.uint8)
    return queries, database


def near_tie_pixels(rng, num_queries, num_database):
    """Pixels 199..201: squared norms near 1.2e8 differ by a few units, which float32 cannot resolve."""
    queries = rng.integers(199, 202, size=(num_queries, 32, 32, 3), dtype=np.uint8)
    database = rng.integers(199, 202, size=(num_database, 32, 32, 3), dtype=np.uint8)
    return queries, database


@pytest.mark.parametrize("make_data", [uniform_pixels, near_tie_pixels])
@pytest.mark.parametrize("metric", ["l2", "l1"])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_knn_matches_torch_cdist(make_data, metric, k):
    rng = np.random.default_rng(4)
    queries, database = make_data(rng, 40, 600)
    database_labels = rng.integers(0, NUM_CLASSES, size=600).astype(np.int32)
    reference_distances, reference_indices = torch_reference(queries, database, k, metric)

    distances, indices = nearest_neighbors(queries, database, k=k, metric=metric)
    predictions = predict(queries, database, database_labels, k=k, metric=metric, num_classes=NUM_CLASSES)

    np.testing.assert_array_equal(np.asarray(indices), reference_indices, err_msg="neighbour indices differ")
    np.testing.assert_allclose(
        np.asarray(distances), reference_distances, rtol=1e-6, err_msg="neighbour distances differ"
    )
    np.testing.assert_array_equal(
        np.asarray(predictions), torch_vote(database_labels[reference_indices]), err_msg="votes differ"
    )
