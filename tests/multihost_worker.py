"""One process of a two-process JAX run over loopback, started by test_sharding.py.

Usage: python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES LOCAL_DEVICES

Every process joins the coordinator at 127.0.0.1:PORT and builds one mesh
over the devices of all processes. On it they compute a `psum` of each
device's position in the mesh (1 to the device count) and a kNN search of
`knn_inputs()` with the database split over every device. Process 0 prints
both as one JSON line starting with `RESULT `.
"""

import json
import sys

import jax
import numpy as np


def knn_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Seeded uint8 queries `[9, 12]` and database `[203, 12]` with tied distances."""
    rng = np.random.default_rng(5)
    database = rng.integers(0, 4, size=(203, 12), dtype=np.uint8)
    queries = rng.integers(0, 4, size=(9, 12), dtype=np.uint8)
    return queries, database


def main() -> None:
    port, process_id, num_processes, local_devices = (int(arg) for arg in sys.argv[1:])

    jax.config.update("jax_num_cpu_devices", local_devices)
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        coordinator_bind_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )

    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    from jaxclf import knn, sharding

    mesh = sharding.make_mesh()

    def sum_of_positions(block: jax.Array) -> jax.Array:
        position = jax.lax.axis_index(sharding.DATA_AXIS).astype(jnp.int32) + 1
        return jax.lax.psum(block + position, sharding.DATA_AXIS)

    zeros = sharding.shard_batch(np.zeros((mesh.size,), np.int32), mesh)
    position_sum = jax.jit(
        jax.shard_map(
            sum_of_positions,
            mesh=mesh,
            in_specs=PartitionSpec(sharding.DATA_AXIS),
            out_specs=PartitionSpec(),
        )
    )(zeros)

    queries, database = knn_inputs()
    distances, indices = knn.nearest_neighbors(queries, database, k=60, metric="l1", mesh=mesh)

    result = {
        "mesh": sharding.describe_mesh(mesh),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "position_sum": int(position_sum.addressable_data(0)[0]),
        "distances": np.asarray(distances.addressable_data(0)).tolist(),
        "indices": np.asarray(indices.addressable_data(0)).tolist(),
    }
    if process_id == 0:
        print("RESULT " + json.dumps(result), flush=True)

    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
