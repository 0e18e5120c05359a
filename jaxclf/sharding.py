"""Device meshes for multi-device kNN and data-parallel training.

jaxclf scales with JAX's own sharding: a `jax.sharding.Mesh` names the
devices, `NamedSharding` places arrays on them, and `jax.jit` or
`jax.shard_map` compile one program for all of them. The public functions
that accept `mesh=` call into this module: `nearest_neighbors`, `predict`,
`predict_proba` and `cross_validate` for kNN, and `train_step`,
`train_epoch` and `fit` for training.

Mesh axes have a meaning by name:

- `DATA_AXIS` (`"data"`, the default of `make_mesh`) splits the rows of the
  data: training batches, and the kNN database.
- `QUERY_AXIS` (`"queries"`) splits the kNN queries, so every device searches
  the whole database for its share of the queries.

A two-axis mesh such as `jax.make_mesh((2, 4), (QUERY_AXIS, DATA_AXIS))`
splits both at once. Training splits its batches over every axis of the mesh.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxclf import _search

DATA_AXIS = "data"
QUERY_AXIS = "queries"

# Index of a masked or missing neighbour. Its key is `_search._sentinel`, above
# every real key, so a merge by key, then index, ranks it last.
_INDEX_SENTINEL = np.iinfo(np.int32).max


def make_mesh(
    devices: int | Sequence[jax.Device] | None = None,
    *,
    axis_name: str = DATA_AXIS,
) -> Mesh:
    """Build a one-axis mesh over `devices`.

    Args:
        devices: the devices to use, in mesh order, or their number, which
            takes the first ones of `jax.devices()`. Defaults to
            `jax.devices()`: every device of every process, which in a single
            process is every local device.
        axis_name: `DATA_AXIS` to split the data (training batches, the kNN
            database) or `QUERY_AXIS` to split the kNN queries.

    Returns:
        A mesh with one axis of `len(devices)` devices, of type
        `AxisType.Auto`, so `jax.jit` propagates shardings from the inputs.

    Raises:
        ValueError: if `devices` is empty, lists a device twice or is a
            number below 1 or above `jax.device_count()`, or `axis_name` is
            not a non-empty string.
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        devices = _first_devices(int(devices))
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


def _first_devices(count: int) -> list[jax.Device]:
    available = jax.devices()
    if count < 1:
        raise ValueError(f"devices must be at least 1, got {count}")
    if count > len(available):
        hint = ""
        if jax.default_backend() == "cpu":
            hint = (
                f"; on CPU, simulate {count} devices by setting "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before JAX starts"
            )
        raise ValueError(
            f"devices={count}, but only {len(available)} {jax.default_backend()} "
            f"device(s) are available{hint}"
        )
    return available[:count]


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


# ----------------------------------------------------------------------------
# kNN over a mesh: the database split over the data axes, the queries over
# QUERY_AXIS, and a database on the host streamed to the devices in chunks.


def sharded_nearest_neighbors(
    queries: jax.typing.ArrayLike,
    database: jax.typing.ArrayLike,
    *,
    k: int,
    metric: str,
    mesh: Mesh | None,
    memory_budget_bytes: int,
    candidate_pool_size: int | None = None,
    stream_from_host: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Search on every device of `mesh`; the `mesh=` path of `jaxclf.nearest_neighbors`.

    Every device searches its block of the database (rows split over the
    mesh axes other than `QUERY_AXIS`) for its block of the queries (split
    over `QUERY_AXIS`) with the single-device search, keeping its local top-k
    with global indices. One all-gather over the database axes and a sort by
    key, then index, merge them into the global top-k. The database is padded
    to a multiple of its device count and padded rows are masked, so they
    never win. The result is identical, bit for bit, to the single-device
    search, ties included, because both rank the same exact keys by the same
    rule.

    With `stream_from_host`, the database (a NumPy array on the host, such
    as a `np.memmap`) is never copied whole to the devices. It is read in
    chunks of about `memory_budget_bytes`. Each chunk is searched over
    `mesh`, or on the default device when `mesh` is None, and merged into a
    running top-k on the devices.

    `nearest_neighbors`, which calls this function, checks the arguments.
    `memory_budget_bytes` bounds the distance blocks on each device, and
    `candidate_pool_size` is passed on to the single-device search.

    Returns:
        `(distances, indices)`, float32 and int32 `[num_queries, k]`, nearest
        first, replicated on every device of `mesh` so that every process can
        read them.
    """
    options = dict(
        k=k, metric=metric, mesh=mesh, memory_budget_bytes=memory_budget_bytes,
        candidate_pool_size=candidate_pool_size,
    )
    if stream_from_host:
        keys, indices = _stream_search_keys(queries, database, **options)
    else:
        keys, indices = _mesh_search_keys(queries, database, **options)
    return _search._keys_to_distances(keys, metric), indices


def _split_axes(mesh: Mesh) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the mesh axes that split the queries and those that split the database."""
    query_axes = tuple(name for name in mesh.axis_names if name == QUERY_AXIS)
    database_axes = tuple(name for name in mesh.axis_names if name != QUERY_AXIS)
    return query_axes, database_axes


def _axes_size(mesh: Mesh, axes: tuple[str, ...]) -> int:
    return int(np.prod([mesh.shape[name] for name in axes], dtype=np.int64))


def _pad_rows(array, num_rows: int):
    """Append zero rows to reach `num_rows`, on the host for NumPy input, else on device."""
    missing = num_rows - array.shape[0]
    if missing == 0:
        return array
    widths = [(0, missing)] + [(0, 0)] * (array.ndim - 1)
    if isinstance(array, np.ndarray):
        return np.pad(array, widths)
    return jnp.pad(array, widths)


def _mesh_search_keys(queries, database, *, k, metric, mesh, memory_budget_bytes,
                      candidate_pool_size=None, row_offset=0):
    """Exact top-k ranking keys and global indices `[num_queries, k]`, searched over `mesh`."""
    query_axes, database_axes = _split_axes(mesh)
    num_queries, num_database = queries.shape[0], database.shape[0]
    query_shards = _axes_size(mesh, query_axes)
    database_shards = _axes_size(mesh, database_axes)

    padded_queries = _pad_rows(queries, -(-num_queries // query_shards) * query_shards)
    padded_database = _pad_rows(database, -(-num_database // database_shards) * database_shards)
    shard_rows = padded_database.shape[0] // database_shards
    num_padding = padded_database.shape[0] - num_database

    padded_queries = jax.device_put(padded_queries, NamedSharding(mesh, PartitionSpec(query_axes or None)))
    padded_database = jax.device_put(padded_database, NamedSharding(mesh, PartitionSpec(database_axes or None)))

    keys, indices = _mesh_search_jit(
        padded_queries,
        padded_database,
        jnp.int32(row_offset),
        k=k,
        metric=metric,
        mesh=mesh,
        num_database=num_database,
        local_k=min(k + num_padding, shard_rows),
        memory_budget_bytes=memory_budget_bytes,
        candidate_pool_size=candidate_pool_size,
    )
    return keys[:num_queries], indices[:num_queries]


@functools.partial(
    jax.jit,
    static_argnames=(
        "k", "metric", "mesh", "num_database", "local_k", "memory_budget_bytes",
        "candidate_pool_size",
    ),
)
def _mesh_search_jit(queries, database, row_offset, *, k, metric, mesh, num_database, local_k,
                     memory_budget_bytes, candidate_pool_size):
    query_axes, database_axes = _split_axes(mesh)

    def search_block(query_block, database_block):
        # Padding rows sit at the end of the database and number at most
        # local_k - k, unless local_k covers the whole shard. Either way the
        # shard's k best real rows are among the local_k rows found here.
        keys, indices = _search._search_keys(
            query_block, database_block, k=local_k, metric=metric,
            memory_budget_bytes=memory_budget_bytes, candidate_pool_size=candidate_pool_size,
        )
        shard = lax.axis_index(database_axes) if database_axes else jnp.int32(0)
        indices = indices + shard.astype(jnp.int32) * database_block.shape[0]
        is_padding = indices >= num_database
        keys = jnp.where(is_padding, _search._sentinel(keys.dtype), keys)
        indices = jnp.where(is_padding, _INDEX_SENTINEL, indices)

        if database_axes:
            keys = lax.all_gather(keys, database_axes, axis=1, tiled=True)
            indices = lax.all_gather(indices, database_axes, axis=1, tiled=True)
        keys, indices = lax.sort((keys, indices), dimension=1, num_keys=2)
        return keys[:, :k], indices[:, :k]

    keys, indices = jax.shard_map(
        search_block,
        mesh=mesh,
        in_specs=(PartitionSpec(query_axes or None), PartitionSpec(database_axes or None)),
        out_specs=PartitionSpec(query_axes or None),
        # The varying-axes check rejects the single-device search, whose loops
        # start from constants. The merged result is equal on every database
        # shard, as out_specs promises.
        check_vma=False,
    )(queries, database)

    indices = jnp.where(indices == _INDEX_SENTINEL, indices, indices + row_offset)
    keys = lax.with_sharding_constraint(keys, replicated_sharding(mesh))
    indices = lax.with_sharding_constraint(indices, replicated_sharding(mesh))
    return keys, indices


def _stream_search_keys(queries, database, *, k, metric, mesh, memory_budget_bytes,
                        candidate_pool_size=None):
    """Search a host `database`, such as a `np.memmap`, chunk by chunk with a running top-k."""
    num_database = database.shape[0]
    row_bytes = max(1, database[:1].nbytes)
    chunk_rows = max(1, memory_budget_bytes // row_bytes)
    if mesh is not None:
        chunk_rows = -(-chunk_rows // mesh.size) * mesh.size

    if mesh is None:
        queries = jnp.asarray(queries)

    best = None
    for start in range(0, num_database, chunk_rows):
        chunk = np.asarray(database[start : start + chunk_rows])
        chunk_k = min(k, chunk.shape[0])

        if mesh is None:
            keys, indices = _search._search_keys(
                queries, jnp.asarray(chunk), k=chunk_k, metric=metric,
                memory_budget_bytes=memory_budget_bytes, candidate_pool_size=candidate_pool_size,
            )
            indices = indices + jnp.int32(start)
        else:
            keys, indices = _mesh_search_keys(
                queries, chunk, k=chunk_k, metric=metric, mesh=mesh,
                memory_budget_bytes=memory_budget_bytes, candidate_pool_size=candidate_pool_size,
                row_offset=start,
            )
        keys, indices = _pad_top_k(keys, indices, k)

        best = (keys, indices) if best is None else _search._merge_top_k(*best, keys, indices, k=k)
    return best


def _pad_top_k(keys: jax.Array, indices: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Widen a top-k list to `k` columns with entries that every merge ranks last."""
    missing = k - keys.shape[1]
    if missing == 0:
        return keys, indices
    shape = (keys.shape[0], missing)
    keys = jnp.concatenate([keys, jnp.full(shape, _search._sentinel(keys.dtype))], axis=1)
    indices = jnp.concatenate([indices, jnp.full(shape, _INDEX_SENTINEL, jnp.int32)], axis=1)
    return keys, indices


# ----------------------------------------------------------------------------
# Data-parallel training: batches split along the batch axis over every mesh
# axis, parameters and optimiser state replicated. jax.jit partitions the one
# compiled step from these shardings and adds the all-reduce of the gradients.


def constrain_batch(tree, mesh: Mesh | None):
    """Inside `jax.jit`, split each array of `tree` along its batch axis over `mesh`.

    Returns `tree` unchanged when `mesh` is None, so a jitted step takes one
    code path for one device and for many.
    """
    if mesh is None:
        return tree
    return lax.with_sharding_constraint(tree, batch_sharding(mesh))


def place_data_parallel(state, batch, mesh: Mesh):
    """Replicate `state` and split `batch` along its batch axis over `mesh`.

    Args:
        state: a train state or any pytree of parameters.
        batch: a pytree of arrays `[batch_size, ...]`, e.g. `(images, labels)`.
        mesh: the mesh to train on.

    Returns:
        `(state, batch)` placed on the mesh.

    Raises:
        ValueError: if the batch size is not divisible by `mesh.size`.
    """
    return replicate(state, mesh), shard_batch(batch, mesh)
