"""One process of a two-process JAX run over loopback, started by test_sharding.py.

Usage: python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES LOCAL_DEVICES

Every process joins the coordinator at 127.0.0.1:PORT, builds one mesh over
the devices of all processes and computes two cross-process results on the
same seeded inputs: a `psum` of each device's position in the mesh (1 to
the device count) and a kNN search
with the database split over every device. Process 0 prints them as one JSON
line starting with `RESULT `; the test compares them with NumPy.
"""

import json
import sys

import jax


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
    import numpy as np
    from jax.sharding import PartitionSpec

    from jaxclf import sharding

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

    result = {
        "mesh": sharding.describe_mesh(mesh),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "position_sum": int(position_sum.addressable_data(0)[0]),
    }
    if process_id == 0:
        print("RESULT " + json.dumps(result), flush=True)

    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
