"""Device meshes for multi-device kNN and data-parallel training.

jaxclf scales with JAX's own sharding: a `jax.sharding.Mesh` names the
devices, `NamedSharding` places arrays on them, and `jax.jit` or
`jax.shard_map` compile one program for all of them. The public functions
that accept `mesh=` (`nearest_neighbors`, `train_step`, `train_epoch`) call
into this module.

Mesh axes have a meaning by name:

- `DATA_AXIS` (`"data"`, the default of `make_mesh`) splits the rows of the
  data: training batches, and the kNN database.
- `QUERY_AXIS` (`"queries"`) splits the kNN queries, so every device searches
  the whole database for its share of the queries.

A two-axis mesh such as `jax.make_mesh((2, 4), (QUERY_AXIS, DATA_AXIS))`
splits both at once. Training splits its batches over every axis of the mesh.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
QUERY_AXIS = "queries"


def make_mesh(
    devices: list[jax.Device] | None = None,
    *,
    axis_name: str = DATA_AXIS,
) -> Mesh:
    """Build a one-axis mesh over `devices`.

    Args:
        devices: the devices to use, in mesh order. Defaults to `jax.devices()`:
            every device of every process, which in a single process is every
            local device.
        axis_name: `DATA_AXIS` to split the data (training batches, the kNN
            database) or `QUERY_AXIS` to split the kNN queries.

    Returns:
        A mesh with one axis of `len(devices)` devices, of type
        `AxisType.Auto`, so `jax.jit` propagates shardings from the inputs.

    Raises:
        ValueError: if `devices` is empty or lists a device twice, or
            `axis_name` is not a non-empty string.
    """
    if devices is None:
        devices = jax.devices()
    devices = list(devices)

    if not devices:
        raise ValueError("devices is empty; pass at least one device or None for all devices")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device more than once: {devices}")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(
            f"axis_name must be a non-empty string such as {DATA_AXIS!r} or "
            f"{QUERY_AXIS!r}, got {axis_name!r}"
        )

    return Mesh(np.array(devices, dtype=object), (axis_name,), axis_types=(AxisType.Auto,))


def describe_mesh(mesh: Mesh) -> str:
    """Describe `mesh` in one line for logs: axes, device kinds and processes.

    Example: `mesh data=4 over 4 cpu devices (ids 0,1,2,3) in 1 process`.
    """
    axes = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    devices = list(mesh.devices.flat)
    platforms = sorted({device.platform for device in devices})
    processes = sorted({device.process_index for device in devices})
    device_ids = ",".join(str(device.id) for device in devices)
    process_word = "process" if len(processes) == 1 else "processes"

    return (
        f"mesh {axes} over {len(devices)} {'/'.join(platforms)} devices "
        f"(ids {device_ids}) in {len(processes)} {process_word}"
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Return the sharding that splits an array's leading axis over every mesh axis."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Return the sharding that puts a full copy of an array on every mesh device."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(batch_size: int, mesh: Mesh, *, name: str = "batch_size") -> None:
    """Raise a ValueError unless `batch_size` splits evenly over the mesh devices."""
    if batch_size % mesh.size:
        lower = batch_size - batch_size % mesh.size
        raise ValueError(
            f"{name} {batch_size} is not divisible by the {mesh.size} devices of the "
            f"mesh; use a multiple of {mesh.size}, such as {lower or mesh.size} or "
            f"{lower + mesh.size}"
        )


def shard_batch(tree, mesh: Mesh):
    """Place every array of `tree` split along its leading (batch) axis over `mesh`.

    Each process passes the same global arrays; every device receives its
    contiguous block of rows.

    Args:
        tree: a pytree of arrays `[batch, ...]` with one common batch size.
        mesh: the mesh to split over; the batch is split over all its axes.

    Returns:
        The same pytree of `jax.Array`s with `batch_sharding(mesh)`.

    Raises:
        ValueError: if the arrays disagree on the batch size or it is not
            divisible by `mesh.size`.
    """
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) > 1:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(f"shard_batch needs arrays with one common leading axis, got shapes {shapes}")
    for size in sizes:
        check_batch_divisible(size, mesh)

    return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Place a full copy of every array of `tree` (parameters, a train state) on each device."""
    return jax.device_put(tree, replicated_sharding(mesh))
