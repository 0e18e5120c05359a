"""Exact k-nearest neighbours: distances, streaming top-k search, voting, predict.

Exactness. For uint8 inputs (pixels), distances are computed in int32, which
represents every L1 or squared L2 distance between rows of up to 32,000
features exactly (32,000 x 255^2 < 2^31). uint8 rows with more features are
searched as float32. The neighbours, their order and the vote are therefore
identical to a float64 brute-force search: equal distances order by lower
database index, on every chunk size and memory budget, and uint8
subtraction never wraps. Float arrays whose values are all integers in
`0..255` take the same path, and so do integer arrays of other dtypes whose
values all lie in `0..255`. Other integers are rejected, because float32
cannot hold them all exactly. Those checks run on the host, so under
`jax.jit`, where the values are unknown, integer inputs must be uint8. bool
and complex inputs are rejected.

For other float inputs, every distance that decides the ranking is computed
from float32 direct differences, `sum((q - b)^2)` or `sum(|q - b|)`, never
from the expansion `|q|^2 + |b|^2 - 2 q.b`, whose cancellation can swap near
neighbours. Each such value is within a relative `(D + 2) * 2^-24` of the
real distance (`D` features). The result therefore equals a float64
brute-force search except where two float64 distances are closer than that,
and such near-ties order by the float32 values, then by lower index.
Float values must satisfy `max|value| <= 1e18 / sqrt(D)`: then every
squared distance is at most `4 D max|value|^2 <= 4e36`, and every GEMM score
at most `3 D max|value|^2`, far below the float32 maximum `3.4e38`, so no
sum overflows. Larger values raise a ValueError on the host. NOTE: under
`jax.jit` the values are unknown and unchecked; larger ones there make the
ranking meaningless and may return indices outside the database.

Speed. L2 searches first pick a pool of candidates per query with a GEMM,
`|b|^2 - 2 q.b`, in bfloat16 with float32 accumulation for uint8 inputs
(pixel values 0..255 are exact in bfloat16) and in float32 otherwise. The
pool is re-ranked with the exact distances above, and a certificate checks it
was large enough: with `eps` a rigorous bound on the GEMM score error, the
exact k-th distance must lie strictly below the pool's largest score minus
`eps`. Queries that fail it are searched again exactly over the whole
database. L1 has no GEMM form and always runs the exact direct kernel.

Memory. Both searches stream over the database in chunks inside one
`jax.jit` program, with a running top-k merge, and chunk the queries, so the
`[query_chunk, database_chunk]` blocks fit `memory_budget_bytes` whatever
`num_queries x num_database` is. On top come copies of the queries
(bfloat16, or transposed int16 for L1) and the candidate pools, both
`O(num_queries)`. A uint8 database is never copied whole.
"""

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxclf import _search

METRICS = ("l1", "l2", "sqeuclidean")
WEIGHTS = ("uniform", "distance")
DEFAULT_MEMORY_BUDGET_BYTES = 256 * 2**20
"""Default byte budget for the distance blocks of one search step (256 MiB)."""

Metric = Literal["l1", "l2", "sqeuclidean"]

# Float inputs must satisfy max|value| <= _MAGNITUDE_SCALE / sqrt(D); see the module docstring.
_MAGNITUDE_SCALE = 1e18


def pairwise_distances(
    x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, metric: Metric = "l2"
) -> jax.Array:
    """Compute all distances between the rows of `x` and the rows of `y`.

    Every distance is computed directly from differences (int32 for uint8
    inputs, float32 otherwise), so it is exact for uint8 up to the final
    float32 rounding. Memory is `O(n_x * n_y)`: for large inputs use
    `nearest_neighbors`, which streams.

    Args:
        x: `[n_x, D]` or images `[n_x, H, W, C]`, uint8 or float.
        y: `[n_y, D]` or images `[n_y, H, W, C]`, same feature size as `x`.
        metric: `"l1"`, `"l2"` or `"sqeuclidean"` (squared L2).

    Returns:
        float32 distances `[n_x, n_y]`.

    Raises:
        ValueError: unknown metric, empty arrays, differing feature sizes,
            unsupported dtypes, NaN or infinite values, or float values above
            `1e18 / sqrt(D)` in magnitude (see the module docstring).
    """
    x, y = _validate_search_inputs(x, y, metric=metric, x_name="x", y_name="y")
    return _pairwise_distances(x, y, metric=metric)


@functools.partial(jax.jit, static_argnames=("metric",))
def _pairwise_distances(x: jax.Array, y: jax.Array, *, metric: str) -> jax.Array:
    x, y = _search._to_compute_dtypes(_search._as_rows(x), _search._as_rows(y))

    def one_pair(a, b):
        return _search._exact_key(a, b, metric)

    keys = jax.vmap(jax.vmap(one_pair, in_axes=(None, 0)), in_axes=(0, None))(x, y)
    return _search._keys_to_distances(keys, metric)


def nearest_neighbors(
    queries: jax.typing.ArrayLike,
    database: jax.typing.ArrayLike,
    *,
    k: int,
    metric: Metric = "l2",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    candidate_pool_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Find the `k` nearest database rows of every query, exactly.

    See the module docstring for the exactness guarantee: for uint8 inputs the
    result is identical to a float64 brute-force search, ties ordered by lower
    database index.

    Args:
        queries: `[num_queries, D]` or images `[num_queries, H, W, C]`, uint8
            or float.
        database: `[num_database, D]` or images, same feature size. A
            `np.memmap` is never copied whole to a device: it is searched in
            chunks of about `memory_budget_bytes`, with the same result.
        k: neighbours per query, `1 <= k <= num_database`.
        metric: `"l1"`, `"l2"` or `"sqeuclidean"` (squared L2; same neighbours
            as `"l2"`, distances squared).
        memory_budget_bytes: bound on the bytes of the distance blocks of one
            search step; default `DEFAULT_MEMORY_BUDGET_BYTES` (256 MiB).
            NOTE: blocks never shrink below 8 x 128 scores for L2 or the
            128 x 512 tile of the direct kernel, so budgets under about
            256 KiB are exceeded.
        candidate_pool_size: L2 only: candidates per query that the GEMM picks
            for exact re-ranking; default `max(32, 2 * k)`. Smaller pools fail
            the certificate more often, which costs time, never exactness.
        mesh: a device mesh to search on all its devices (see
            `jaxclf.sharding`); `None` searches on the default device.

    Returns:
        `(distances, indices)`: float32 `[num_queries, k]` and int32
        `[num_queries, k]`, nearest first.

    Raises:
        ValueError: invalid `k`, metric, shapes, sizes or values, before any
            compilation.
    """
    stream_from_host = isinstance(database, np.memmap)
    queries, database = _validate_search_inputs(queries, database, metric=metric)
    _validate_k(k, database.shape[0])
    _validate_positive_int("memory_budget_bytes", memory_budget_bytes)
    if candidate_pool_size is not None:
        _validate_positive_int("candidate_pool_size", candidate_pool_size)

    if mesh is not None or stream_from_host:
        from jaxclf import sharding

        return sharding.sharded_nearest_neighbors(
            queries,
            database,
            k=k,
            metric=metric,
            mesh=mesh,
            memory_budget_bytes=memory_budget_bytes,
            candidate_pool_size=candidate_pool_size,
            stream_from_host=stream_from_host,
        )

    keys, indices = _search._search_keys(
        queries,
        database,
        k=k,
        metric=metric,
        memory_budget_bytes=memory_budget_bytes,
        candidate_pool_size=candidate_pool_size,
    )
    return _search._keys_to_distances(keys, metric), indices


def vote(
    neighbor_labels: jax.typing.ArrayLike,
    neighbor_distances: jax.typing.ArrayLike | None = None,
    *,
    num_classes: int,
    weights: Literal["uniform", "distance"] = "uniform",
) -> jax.Array:
    """Sum the votes of each query's neighbours per class.

    `"uniform"` gives every neighbour one vote. `"distance"` weights each by
    `1 / distance`; when a query has neighbours at distance 0, only those vote
    (one each), as in scikit-learn. `argmax` of the result, which takes the
    first maximum, breaks vote ties toward the smallest label, as scikit-learn
    does.

    Args:
        neighbor_labels: int `[num_queries, k]`, values in `[0, num_classes)`
            (checked unless traced).
        neighbor_distances: float `[num_queries, k]`; needed for `"distance"`.
        num_classes: number of classes.
        weights: `"uniform"` or `"distance"`.

    Returns:
        float32 votes `[num_queries, num_classes]`.

    Raises:
        ValueError: unknown weights, num_classes not a positive int, or
            labels that are not integers in `[0, num_classes)`.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    neighbor_labels = _check_class_indices("neighbor_labels", neighbor_labels, num_classes)
    one_hot = jax.nn.one_hot(neighbor_labels, num_classes, dtype=jnp.float32)

    if weights == "uniform":
        neighbor_weights = jnp.ones(neighbor_labels.shape, jnp.float32)
    else:
        if neighbor_distances is None:
            raise ValueError('weights="distance" needs neighbor_distances')
        neighbor_weights = _inverse_distance_weights(jnp.asarray(neighbor_distances))

    return jnp.sum(one_hot * neighbor_weights[..., None], axis=-2)


def _inverse_distance_weights(distances: jax.Array) -> jax.Array:
    distances = distances.astype(jnp.float32)
    is_zero = distances == 0.0
    any_zero = jnp.any(is_zero, axis=-1, keepdims=True)
    inverse = 1.0 / jnp.where(is_zero, 1.0, distances)
    return jnp.where(any_zero, is_zero.astype(jnp.float32), inverse)


def predict_proba(
    queries: jax.typing.ArrayLike,
    database: jax.typing.ArrayLike,
    database_labels: jax.typing.ArrayLike,
    *,
    k: int,
    metric: Metric = "l2",
    num_classes: int = 10,
    weights: Literal["uniform", "distance"] = "uniform",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """Estimate class probabilities as the vote shares of the `k` nearest neighbours.

    Args:
        queries: `[num_queries, D]` or images, uint8 or float.
        database: `[num_database, D]` or images, same feature size.
        database_labels: int `[num_database]` in `[0, num_classes)`.
        k: neighbours per query, `1 <= k <= num_database`.
        metric: `"l1"`, `"l2"` or `"sqeuclidean"`.
        num_classes: number of classes.
        weights: `"uniform"` or `"distance"` (see `vote`).
        memory_budget_bytes: see `nearest_neighbors`.
        mesh: see `nearest_neighbors`.

    Returns:
        float32 `[num_queries, num_classes]`, rows summing to 1.
    """
    votes = _predict_votes(
        queries, database, database_labels, k=k, metric=metric, num_classes=num_classes,
        weights=weights, memory_budget_bytes=memory_budget_bytes, mesh=mesh,
    )
    return votes / jnp.sum(votes, axis=-1, keepdims=True)


def predict(
    queries: jax.typing.ArrayLike,
    database: jax.typing.ArrayLike,
    database_labels: jax.typing.ArrayLike,
    *,
    k: int,
    metric: Metric = "l2",
    num_classes: int = 10,
    weights: Literal["uniform", "distance"] = "uniform",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """Predict labels by majority vote of the `k` nearest neighbours.

    Vote ties go to the smallest label, as in scikit-learn. Arguments as in
    `predict_proba`.

    Returns:
        int32 labels `[num_queries]`.
    """
    votes = _predict_votes(
        queries, database, database_labels, k=k, metric=metric, num_classes=num_classes,
        weights=weights, memory_budget_bytes=memory_budget_bytes, mesh=mesh,
    )
    return jnp.argmax(votes, axis=-1).astype(jnp.int32)


def _predict_votes(queries, database, database_labels, *, k, metric, num_classes, weights,
                   memory_budget_bytes, mesh) -> jax.Array:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    # The originals go on to nearest_neighbors, so that a np.memmap database
    # still streams from the host.
    _, checked_database = _validate_search_inputs(queries, database, metric=metric)
    _validate_k(k, checked_database.shape[0])
    database_labels = _validate_labels(database_labels, checked_database.shape[0], num_classes)

    distances, indices = nearest_neighbors(
        queries, database, k=k, metric=metric, memory_budget_bytes=memory_budget_bytes, mesh=mesh
    )
    return vote(database_labels[indices], distances, num_classes=num_classes, weights=weights)


# ----------------------------------------------------------------------------
# Input checks. They run on the host before anything compiles; value checks
# (finiteness, label range) are skipped for tracers, whose values are unknown.


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _validate_search_inputs(queries, database, *, metric, x_name="queries", y_name="database"):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")

    arrays = []
    for name, array in ((x_name, queries), (y_name, database)):
        if not _is_tracer(array) and not isinstance(array, jax.Array):
            array = np.asarray(array)
        if array.ndim not in (2, 4):
            raise ValueError(
                f"{name} must have shape [N, D] or [N, H, W, C], got shape {array.shape}"
            )
        if array.size == 0:
            raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one row")
        if not (jnp.issubdtype(array.dtype, jnp.integer)
                or jnp.issubdtype(array.dtype, jnp.floating)):
            raise ValueError(
                f"{name} must be uint8 pixels or real floats, got dtype {array.dtype}; "
                f"convert it with .astype(np.uint8) or .astype(np.float32)"
            )
        arrays.append(array)
    queries, database = arrays

    query_features = int(np.prod(queries.shape[1:]))
    database_features = int(np.prod(database.shape[1:]))
    if query_features != database_features:
        raise ValueError(
            f"{x_name} has {query_features} features per row (shape {queries.shape}) but "
            f"{y_name} has {database_features} (shape {database.shape}); both must match"
        )

    return _checked_values(queries, x_name), _checked_values(database, y_name)


def _checked_values(array, name: str):
    """Check values; turn integers 0..255, in any int or float dtype, into uint8.

    Other integers are rejected: float32 cannot hold them all exactly, and
    the search has no exact path for them.
    """
    if array.dtype == jnp.uint8:
        return array
    is_integer = jnp.issubdtype(array.dtype, jnp.integer)
    if _is_tracer(array):
        if is_integer:
            raise ValueError(
                f"{name} has dtype {array.dtype}; under jax.jit pass uint8 pixels or floats, "
                f"converting with .astype(jnp.uint8) or .astype(jnp.float32)"
            )
        return array

    xp = np if isinstance(array, np.ndarray) else jnp
    if is_integer:
        low, high = int(xp.min(array)), int(xp.max(array))
        if low < 0 or high > 255:
            raise ValueError(
                f"{name} has dtype {array.dtype} with values from {low} to {high}; only "
                f"integers in 0..255 (pixels) are searched exactly. Convert pixels with "
                f".astype(np.uint8), or other data with .astype(np.float32) if float32 "
                f"rounding is acceptable"
            )
        return array.astype(xp.uint8)

    if not bool(xp.all(xp.isfinite(array))):
        raise ValueError(f"{name} contains NaN or infinite values; remove or replace them")

    is_pixels = xp.all((array >= 0) & (array <= 255) & (xp.round(array) == array))
    if bool(is_pixels):
        return array.astype(xp.uint8)

    num_features = int(np.prod(array.shape[1:]))
    bound = _MAGNITUDE_SCALE / np.sqrt(num_features)
    largest = float(xp.max(xp.abs(array)))
    if largest > bound:
        raise ValueError(
            f"{name} has values of magnitude up to {largest:.3g}, above the bound "
            f"1e18 / sqrt({num_features} features) = {bound:.3g} where float32 squared "
            f"distances could overflow; rescale it, for example divide by its largest value"
        )
    return array


def _validate_k(k, num_database: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ValueError(f"k must be an int, got {k!r}")
    if not 1 <= k <= num_database:
        raise ValueError(
            f"k must be between 1 and the database size {num_database}, got k={k}"
        )


def _validate_positive_int(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _validate_labels(labels, num_database: int, num_classes: int):
    if not _is_tracer(labels) and not isinstance(labels, jax.Array):
        labels = np.asarray(labels)
    if labels.shape != (num_database,):
        raise ValueError(
            f"database_labels must have shape [{num_database}] (one per database row), "
            f"got shape {labels.shape}"
        )
    return _check_class_indices("database_labels", labels, num_classes)


def _check_class_indices(name: str, labels, num_classes) -> jax.Array:
    """Check integer labels in `[0, num_classes)` (values only when concrete); return int32."""
    _validate_positive_int("num_classes", num_classes)
    if not _is_tracer(labels) and not isinstance(labels, jax.Array):
        labels = np.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name} must be integers, got dtype {labels.dtype}")
    if not _is_tracer(labels) and labels.size:
        # NumPy for host arrays: converting int64 to a 32-bit JAX array first would wrap.
        xp = np if isinstance(labels, np.ndarray) else jnp
        low, high = int(xp.min(labels)), int(xp.max(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, num_classes={num_classes}), "
                f"got values from {low} to {high}"
            )
    return jnp.asarray(labels).astype(jnp.int32)


# ----------------------------------------------------------------------------
# Search of one database chunk with a stable signature. Merge chunks with `_search._merge_top_k`.


def _chunk_top_k(
    queries: jax.Array, database_chunk: jax.Array, chunk_offset, *, k: int, metric: str
) -> tuple[jax.Array, jax.Array]:
    """Find the exact top-`k` ranking keys of `queries` within one database chunk.

    Args:
        queries: `[num_queries, D]` or images, uint8 or float.
        database_chunk: `[chunk_size, D]` or images, same dtype kind.
        chunk_offset: index of the chunk's first row in the whole database,
            added to the returned indices.
        k: neighbours to keep. When the chunk has fewer rows, the missing ones
            get the sentinel key, above every real key, and index `2^31 - 1`,
            so a merge never prefers them.
        metric: `"l1"`, `"l2"` or `"sqeuclidean"`.

    Returns:
        `(keys, indices)`, `[num_queries, k]`: int32 keys for uint8 inputs,
        float32 otherwise (see `_search._keys_to_distances`), and int32 global
        indices, ordered by key then index. Merge chunks with `_search._merge_top_k`.
    """
    chunk_size = database_chunk.shape[0]
    chunk_k = min(k, chunk_size)
    keys, indices = _search._search_keys(
        queries, database_chunk, k=chunk_k, metric=metric,
        memory_budget_bytes=DEFAULT_MEMORY_BUDGET_BYTES, candidate_pool_size=None,
    )
    indices = indices + jnp.asarray(chunk_offset, jnp.int32)

    if chunk_k < k:
        missing = (keys.shape[0], k - chunk_k)
        keys = jnp.concatenate([keys, jnp.full(missing, _search._sentinel(keys.dtype))], axis=1)
        padding = jnp.full(missing, _search._INDEX_SENTINEL, jnp.int32)
        indices = jnp.concatenate([indices, padding], axis=1)
    return keys, indices
