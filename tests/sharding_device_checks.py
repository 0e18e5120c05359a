"""Sharded kNN and data-parallel training against their single-device results.

XLA fixes the number of CPU devices when JAX starts, so test_sharding.py runs
this file with pytest in fresh interpreters under
`XLA_FLAGS=--xla_force_host_platform_device_count=N` for 4 and 8 devices.
Run alone, it uses whatever devices the process has.
"""

import numpy as np
import jax
import pytest
from jax.sharding import AxisType

from jaxclf import knn, sharding, training
from jaxclf.linear import LinearClassifier

NUM_DEVICES = jax.device_count()

# Row counts divisible by neither 4 nor 8, so the database and the queries
# are padded. The L2 candidate pool (64 rows) is smaller than the database.
NUM_DATABASE = 203
NUM_QUERIES = 37

pytestmark = pytest.mark.skipif(
    NUM_DEVICES < 2, reason="needs several devices: run under --xla_force_host_platform_device_count"
)


def _meshes() -> dict[str, jax.sharding.Mesh]:
    """The database split, the queries split, and both on a 2 x N/2 mesh."""
    return {
        "database": sharding.make_mesh(),
        "queries": sharding.make_mesh(axis_name=sharding.QUERY_AXIS),
        "both": jax.make_mesh(
            (2, NUM_DEVICES // 2),
            (sharding.QUERY_AXIS, sharding.DATA_AXIS),
            axis_types=(AxisType.Auto, AxisType.Auto),
        ),
    }


def _tied_pixels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 queries and database with values 0..3, so many distances tie."""
    rng = np.random.default_rng(seed)
    database = rng.integers(0, 4, size=(NUM_DATABASE, 4, 4, 3), dtype=np.uint8)
    queries = rng.integers(0, 4, size=(NUM_QUERIES, 4, 4, 3), dtype=np.uint8)
    database[150] = database[10]
    database[202] = database[10]
    queries[0] = database[10]
    return queries, database


def float64_brute_force(queries, database, *, k: int, metric: str):
    """Distances and indices by NumPy float64, ordered by distance then lower index."""
    difference = (
        queries.reshape(len(queries), 1, -1).astype(np.float64)
        - database.reshape(1, len(database), -1).astype(np.float64)
    )
    if metric == "l1":
        distances = np.abs(difference).sum(axis=-1)
    else:
        distances = np.sqrt((difference * difference).sum(axis=-1))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def _shard_rows() -> int:
    return -(-NUM_DATABASE // NUM_DEVICES)


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize(
    "layout, k",
    [
        ("database", 1),
        ("database", 7),
        ("database", "more than a shard"),
        ("queries", 7),
        ("both", "more than a shard"),
    ],
)
def test_sharded_knn_equals_single_device(metric, layout, k):
    if k == "more than a shard":
        k = _shard_rows() + 5
    queries, database = _tied_pixels(seed=0)
    mesh = _meshes()[layout]

    expected = knn.nearest_neighbors(queries, database, k=k, metric=metric)
    distances, indices = knn.nearest_neighbors(queries, database, k=k, metric=metric, mesh=mesh)

    np.testing.assert_array_equal(
        np.asarray(indices), np.asarray(expected[1]), err_msg=f"indices differ on the {layout} mesh"
    )
    np.testing.assert_array_equal(
        np.asarray(distances), np.asarray(expected[0]), err_msg=f"distances differ on the {layout} mesh"
    )

    reference_distances, reference_indices = float64_brute_force(queries, database, k=k, metric=metric)
    np.testing.assert_array_equal(np.asarray(indices), reference_indices, err_msg="indices differ from float64")
    np.testing.assert_allclose(np.asarray(distances), reference_distances, rtol=1e-6, atol=0)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_sharded_knn_float_inputs(metric):
    rng = np.random.default_rng(1)
    database = rng.normal(size=(NUM_DATABASE, 20)).astype(np.float32)
    queries = rng.normal(size=(NUM_QUERIES, 20)).astype(np.float32)
    database[170] = database[3]
    queries[5] = database[3]
    k = _shard_rows() + 5

    expected = knn.nearest_neighbors(queries, database, k=k, metric=metric)
    distances, indices = knn.nearest_neighbors(
        queries, database, k=k, metric=metric, mesh=sharding.make_mesh()
    )

    np.testing.assert_array_equal(np.asarray(indices), np.asarray(expected[1]))
    np.testing.assert_array_equal(np.asarray(distances), np.asarray(expected[0]))


def test_sharded_knn_streams_memmap(tmp_path):
    queries, database = _tied_pixels(seed=2)
    path = tmp_path / "database.npy"
    np.save(path, database)
    database_memmap = np.load(path, mmap_mode="r")
    # 48 bytes per row: chunks of 40 rows, fewer than k, and a partial last chunk.
    budget = 40 * 48
    k = 45

    expected = knn.nearest_neighbors(queries, database, k=k, metric="l2")
    distances, indices = knn.nearest_neighbors(
        queries, database_memmap, k=k, metric="l2", mesh=sharding.make_mesh(),
        memory_budget_bytes=budget,
    )

    np.testing.assert_array_equal(np.asarray(indices), np.asarray(expected[1]))
    np.testing.assert_array_equal(np.asarray(distances), np.asarray(expected[0]))


def _training_data(num_examples: int):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(num_examples, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(num_examples,), dtype=np.int32)
    return images, labels


def _initial_state():
    tx = training.make_optimizer(0.01, momentum=0.9, weight_decay=1e-3)
    return training.create_train_state(
        jax.random.key(0), LinearClassifier(10, initializer="torch"), tx, image_shape=(8, 8, 3)
    )


def _assert_params_close(actual, expected, what: str) -> None:
    # Sums over the batch run in another order on several devices, so the
    # results agree to float32 rounding: 1e-5 relative to the largest weight.
    for name in ("kernel", "bias"):
        reference = np.asarray(expected.params[name])
        np.testing.assert_allclose(
            np.asarray(actual.params[name]), reference, rtol=1e-5,
            atol=1e-5 * np.abs(reference).max(), err_msg=f"{what}: {name} differs",
        )


def test_data_parallel_steps_match_single_device():
    batch_size = 4 * NUM_DEVICES
    images, labels = _training_data(50 * batch_size)
    mesh = sharding.make_mesh()
    single, parallel = _initial_state(), _initial_state()

    compiled_before = training._train_step_jit._cache_size()
    for start in range(0, len(images), batch_size):
        batch = (images[start : start + batch_size], labels[start : start + batch_size])
        single, single_metrics = training.train_step(single, *batch)
        parallel, parallel_metrics = training.train_step(parallel, *batch, mesh=mesh)
    compiled = training._train_step_jit._cache_size() - compiled_before

    _assert_params_close(parallel, single, "after 50 steps")
    np.testing.assert_allclose(parallel_metrics["loss"], single_metrics["loss"], rtol=1e-5)
    assert parallel.params["kernel"].sharding == sharding.replicated_sharding(mesh)
    # The single-device step compiles twice, because the step count starts as
    # a Python int and then becomes an array; the mesh step compiles once.
    assert compiled <= 3, f"train_step compiled {compiled} programs for 100 steps"


def test_data_parallel_epoch_matches_single_device():
    batch_size = 2 * NUM_DEVICES
    # 50 batches, the last one partial and masked.
    images, labels = _training_data(50 * batch_size - 3)
    key = jax.random.key(7)

    single, single_metrics = training.train_epoch(
        _initial_state(), images, labels, key, batch_size=batch_size
    )
    parallel, parallel_metrics = training.train_epoch(
        _initial_state(), images, labels, key, batch_size=batch_size, mesh=sharding.make_mesh()
    )

    _assert_params_close(parallel, single, "after one epoch of 50 steps")
    np.testing.assert_allclose(parallel_metrics["loss"], single_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(parallel_metrics["accuracy"], single_metrics["accuracy"], rtol=1e-6)


def test_data_parallel_rejects_uneven_batch():
    images, labels = _training_data(64)
    mesh = sharding.make_mesh()
    batch_size = NUM_DEVICES + 1

    with pytest.raises(ValueError, match=f"batch_size {batch_size} is not divisible by the {NUM_DEVICES} devices"):
        training.train_epoch(_initial_state(), images, labels, jax.random.key(0), batch_size=batch_size, mesh=mesh)
    with pytest.raises(ValueError, match=f"batch_size {batch_size} is not divisible"):
        training.train_step(_initial_state(), images[:batch_size], labels[:batch_size], mesh=mesh)


def test_data_parallel_fit_with_checkpoints(tmp_path):
    batch_size = 2 * NUM_DEVICES
    images, labels = _training_data(20 * batch_size)
    validation = _training_data(30)
    options = dict(epochs=2, seed=1, batch_size=batch_size, validation=validation)

    single, single_history = training.fit(_initial_state(), images, labels, **options)
    parallel, parallel_history = training.fit(
        _initial_state(), images, labels, checkpoint_dir=tmp_path / "run",
        mesh=sharding.make_mesh(), **options,
    )

    _assert_params_close(parallel, single, "after fit")
    for name in ("train_loss", "validation_loss"):
        np.testing.assert_allclose(
            parallel_history[-1][name], single_history[-1][name], rtol=1e-5, err_msg=name
        )
