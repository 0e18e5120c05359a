"""Tests for jaxclf.sharding: mesh helpers, host streaming, two processes, several devices.

The sharded checks need several devices, and XLA fixes the CPU device count
when JAX starts, so they live in sharding_device_checks.py and run here in
fresh interpreters under `--xla_force_host_platform_device_count`.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxclf import _search, knn, sharding
from multihost_worker import knn_inputs
from sharding_device_checks import float64_brute_force

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_mesh_defaults_to_all_devices():
    mesh = sharding.make_mesh()

    assert mesh.axis_names == (sharding.DATA_AXIS,)
    assert list(mesh.devices.flat) == jax.devices()


@pytest.mark.parametrize(
    "devices, axis_name, message",
    [
        ([], sharding.DATA_AXIS, "devices is empty"),
        ("twice", sharding.DATA_AXIS, "more than once"),
        (None, "", "axis_name must be a non-empty string"),
    ],
)
def test_make_mesh_rejects_bad_arguments(devices, axis_name, message):
    if devices == "twice":
        devices = [jax.devices()[0]] * 2

    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(devices, axis_name=axis_name)


def test_make_mesh_takes_device_count():
    mesh = sharding.make_mesh(1)

    assert list(mesh.devices.flat) == jax.devices()[:1]


@pytest.mark.parametrize(
    "count, message",
    [(0, "devices must be at least 1, got 0"), (10_000, "devices=10000, but only")],
)
def test_make_mesh_rejects_bad_count(count, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(count)


def test_describe_mesh_names_axes_and_processes():
    mesh = sharding.make_mesh(axis_name=sharding.QUERY_AXIS)

    description = sharding.describe_mesh(mesh)

    assert description.startswith(f"mesh queries={jax.device_count()} over ")
    assert "in 1 process" in description


def test_shard_batch_and_replicate_keep_values():
    mesh = sharding.make_mesh()
    images = np.arange(2 * mesh.size * 3, dtype=np.uint8).reshape(2 * mesh.size, 3)
    params = {"kernel": np.ones((3, 2), np.float32)}

    placed_images = sharding.shard_batch(images, mesh)
    placed_params = sharding.replicate(params, mesh)

    assert placed_images.sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(placed_images), images)
    assert placed_params["kernel"].sharding == sharding.replicated_sharding(mesh)


def test_shard_batch_rejects_mismatched_batches():
    mesh = sharding.make_mesh()

    with pytest.raises(ValueError, match="one common leading axis"):
        sharding.shard_batch((np.zeros((4, 2)), np.zeros((8,))), mesh)


@pytest.mark.parametrize("batch_size, num_devices", [(6, 4), (10, 8), (1, 2)])
def test_check_batch_divisible_names_size_and_fix(batch_size, num_devices):
    mesh = jax.sharding.AbstractMesh((num_devices,), (sharding.DATA_AXIS,))

    with pytest.raises(ValueError, match=f"batch_size {batch_size} is not divisible by the {num_devices} devices"):
        sharding.check_batch_divisible(batch_size, mesh)


def test_two_processes_over_loopback():
    host_address = socket.gethostbyname(socket.gethostname())
    if not host_address.startswith("127."):
        # Gloo, the CPU collectives of jax.distributed, listens on the address
        # of the host name; these tests send nothing off the loopback device.
        pytest.skip(f"host name resolves to {host_address}, not to a loopback address")

    port = _free_loopback_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, str(TESTS_DIR / "multihost_worker.py"), str(port)]
    workers = [
        subprocess.Popen(
            command + [str(process_id), "2", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for process_id in (0, 1)
    ]

    outputs = []
    try:
        for worker in workers:
            output, _ = worker.communicate(timeout=120)
            outputs.append(output)
    finally:
        for worker in workers:
            worker.kill()

    for process_id, (worker, output) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, f"process {process_id} failed:\n{output}"
    result_lines = [line for line in outputs[0].splitlines() if line.startswith("RESULT ")]
    assert result_lines, f"process 0 printed no result:\n{outputs[0]}"
    result = json.loads(result_lines[0].removeprefix("RESULT "))

    assert result["process_count"] == 2
    assert result["device_count"] == 4
    assert result["position_sum"] == 1 + 2 + 3 + 4, "psum over both processes is wrong"
    queries, database = knn_inputs()
    expected_distances, expected_indices = float64_brute_force(queries, database, k=60, metric="l1")
    np.testing.assert_array_equal(result["indices"], expected_indices)
    np.testing.assert_array_equal(result["distances"], expected_distances)


@pytest.mark.parametrize(
    "num_devices, selection",
    [
        (4, "sharded or data_parallel"),
        # The training checks do not depend on the device count; on 8 devices
        # only the kNN checks and the uneven batch run, which saves time.
        (8, "sharded or uneven"),
    ],
)
def test_sharded_checks_on_simulated_devices(num_devices, selection):
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [
        sys.executable, "-m", "pytest", str(TESTS_DIR / "sharding_device_checks.py"),
        "-q", "-p", "no:cacheprovider", "-k", selection,
    ]

    completed = subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )

    assert completed.returncode == 0, (
        f"sharded checks failed on {num_devices} devices:\n{completed.stdout}\n{completed.stderr}"
    )
    assert "skipped" not in completed.stdout, f"sharded checks were skipped:\n{completed.stdout}"


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_memmap_database_streams_in_chunks(tmp_path, monkeypatch, metric):
    rng = np.random.default_rng(4)
    database = rng.integers(0, 4, size=(203, 4, 4, 3), dtype=np.uint8)
    queries = rng.integers(0, 4, size=(21, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "database.npy", database)
    database_memmap = np.load(tmp_path / "database.npy", mmap_mode="r")

    streamed_chunks = []
    original_search = _search._search_keys

    def recording_search(queries, database, **options):
        streamed_chunks.append(database.shape[0])
        return original_search(queries, database, **options)

    monkeypatch.setattr(_search, "_search_keys", recording_search)
    # 48 bytes per row, so chunks of 40 rows: fewer than k, and a partial last one.
    distances, indices = knn.nearest_neighbors(
        queries, database_memmap, k=45, metric=metric, memory_budget_bytes=40 * 48
    )
    monkeypatch.undo()
    expected = knn.nearest_neighbors(queries, database, k=45, metric=metric)

    assert streamed_chunks == [40, 40, 40, 40, 40, 3], "the memmap was not searched chunk by chunk"
    np.testing.assert_array_equal(np.asarray(indices), np.asarray(expected[1]))
    np.testing.assert_array_equal(np.asarray(distances), np.asarray(expected[0]))
    reference_distances, reference_indices = float64_brute_force(queries, database, k=45, metric=metric)
    np.testing.assert_array_equal(np.asarray(indices), reference_indices)
