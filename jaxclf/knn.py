"""Exact k-nearest neighbours: distances, streaming top-k search, voting, predict.

Exactness. For uint8 inputs (pixels), distances are computed in int32, which
represents every L1 or squared L2 distance between rows of up to 32,000
features exactly (32,000 x 255^2 < 2^31). uint8 rows with more features are
searched as float32. The neighbours, their order and the vote are therefore
identical to a float64 brute-force search: equal distances order by lower
database index, on every chunk size and memory budget, and uint8
subtraction never wraps. Float arrays whose values are all integers in
`0..255` take the same path, and so do integer arrays of other dtypes whose
values all lie in `0..255`; any other integers are rejected, since float32
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
from jax import lax

from jaxclf import data

METRICS = ("l1", "l2", "sqeuclidean")
WEIGHTS = ("uniform", "distance")
DEFAULT_MEMORY_BUDGET_BYTES = 256 * 2**20
"""Default byte budget for the distance blocks of one search step (256 MiB)."""

Metric = Literal["l1", "l2", "sqeuclidean"]

_UNIT_ROUNDOFF = 2.0**-24  # float32
# Float inputs must satisfy max|value| <= _MAGNITUDE_SCALE / sqrt(D); see the module docstring.
_MAGNITUDE_SCALE = 1e18
_INDEX_SENTINEL = np.iinfo(np.int32).max
# top-k ranks int32 keys as float32 bit patterns, because XLA:CPU's float top-k
# ran about 30x faster per element than its integer one (jax 0.10, x86-64).
# Shifted past the subnormals, which CPUs may flush to zero, nonnegative keys
# below the bits of +inf order like the integers.
_INT_KEY_BIAS = 2**23
_INT_KEY_SENTINEL = 2**31 - 2**24 - 1
# Largest uint8 feature count with every squared L2 key below the sentinel.
_MAX_EXACT_FEATURES = 32_000
# Bytes per element of a [query_chunk, database_chunk] score block: the block,
# its negation for top-k and the top-k workspace.
_BYTES_PER_SCORE = 12
_MAX_QUERY_CHUNK = 1024
_DIRECT_QUERY_TILE = 128
_DIRECT_DATABASE_TILE = 512
# 128 * 255 < 2^15, so an int16 partial L1 sum over 128 features cannot overflow.
_L1_INT16_GROUP = 128
_FALLBACK_GROUP = 32


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
    x, y = _to_compute_dtypes(_as_rows(x), _as_rows(y))

    def one_pair(a, b):
        return _exact_key(a, b, metric)

    keys = jax.vmap(jax.vmap(one_pair, in_axes=(None, 0)), in_axes=(0, None))(x, y)
    return _keys_to_distances(keys, metric)


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

    keys, indices = _search_keys(
        queries,
        database,
        k=k,
        metric=metric,
        memory_budget_bytes=memory_budget_bytes,
        candidate_pool_size=candidate_pool_size,
    )
    return _keys_to_distances(keys, metric), indices


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
# Ranking keys. The search ranks by exact keys: int32 L1 or squared L2 for
# uint8 inputs, float32 from direct differences otherwise. Squared L2 keys
# serve both "l2" and "sqeuclidean".


def _as_rows(x: jax.Array) -> jax.Array:
    return data.flatten(x) if x.ndim == 4 else x


def _to_compute_dtypes(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keep two uint8 row arrays of up to `_MAX_EXACT_FEATURES` features; else float32 both."""
    if x.dtype == y.dtype == jnp.uint8 and x.shape[-1] <= _MAX_EXACT_FEATURES:
        return x, y
    return x.astype(jnp.float32), y.astype(jnp.float32)


def _key_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.int32) if dtype == jnp.uint8 else jnp.dtype(jnp.float32)


def _sentinel(key_dtype) -> jax.Array:
    """Key of a padded or missing row: above every real key."""
    if key_dtype == jnp.int32:
        return jnp.int32(_INT_KEY_SENTINEL)
    return jnp.float32(jnp.inf)


def _exact_key(a: jax.Array, b: jax.Array, metric: str) -> jax.Array:
    """Exact ranking key of one pair of rows, or a batch along leading axes."""
    work_dtype = _key_dtype(a.dtype)
    difference = a.astype(work_dtype) - b.astype(work_dtype)
    if metric == "l1":
        return jnp.sum(jnp.abs(difference), axis=-1)
    return jnp.sum(difference * difference, axis=-1)


def _squared_norms(x: jax.Array) -> jax.Array:
    """Exact `|x|^2` per row: int32 for uint8, float32 otherwise."""
    values = x.astype(_key_dtype(x.dtype))
    return jnp.sum(values * values, axis=-1)


def _keys_to_distances(keys: jax.Array, metric: str) -> jax.Array:
    distances = keys.astype(jnp.float32)
    return jnp.sqrt(distances) if metric == "l2" else distances


# ----------------------------------------------------------------------------
# Top-k pieces with stable signatures, shared with the sharded search.


def _merge_top_k(
    dist_a: jax.Array, idx_a: jax.Array, dist_b: jax.Array, idx_b: jax.Array, *, k: int
) -> tuple[jax.Array, jax.Array]:
    """Merge two top-k lists `[..., k_a]` and `[..., k_b]` into the best `k`.

    Orders by key, then by lower index, whatever the order of the inputs.
    Keys must be comparable exactly (ranking keys or float32 distances).
    """
    keys = jnp.concatenate([dist_a, dist_b], axis=-1)
    indices = jnp.concatenate([idx_a, idx_b], axis=-1)
    keys, indices = lax.sort((keys, indices), dimension=keys.ndim - 1, num_keys=2)
    return keys[..., :k], indices[..., :k]


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
        float32 otherwise (see `_keys_to_distances`), and int32 global indices,
        ordered by key then index. Merge chunks with `_merge_top_k`.
    """
    chunk_size = database_chunk.shape[0]
    chunk_k = min(k, chunk_size)
    keys, indices = _search_keys(
        queries, database_chunk, k=chunk_k, metric=metric,
        memory_budget_bytes=DEFAULT_MEMORY_BUDGET_BYTES, candidate_pool_size=None,
    )
    indices = indices + jnp.asarray(chunk_offset, jnp.int32)

    if chunk_k < k:
        missing = (keys.shape[0], k - chunk_k)
        keys = jnp.concatenate([keys, jnp.full(missing, _sentinel(keys.dtype))], axis=1)
        indices = jnp.concatenate([indices, jnp.full(missing, _INDEX_SENTINEL, jnp.int32)], axis=1)
    return keys, indices


# ----------------------------------------------------------------------------
# The search program.


def _search_keys(queries, database, *, k, metric, memory_budget_bytes, candidate_pool_size):
    """Pick chunk sizes on the host and run the jitted search; returns ranking keys."""
    num_queries = queries.shape[0]
    num_database = database.shape[0]
    num_features = int(np.prod(database.shape[1:]))

    query_chunk, database_chunk = _chunk_sizes(num_queries, num_database, memory_budget_bytes)
    pool_size = candidate_pool_size if candidate_pool_size is not None else max(32, 2 * k)
    pool_size = min(max(pool_size, k), num_database)
    rerank_group = _rerank_group(query_chunk, pool_size, num_features, memory_budget_bytes)

    return _search_jit(
        queries,
        database,
        k=k,
        metric=metric,
        query_chunk=query_chunk,
        database_chunk=database_chunk,
        pool_size=pool_size,
        rerank_group=rerank_group,
    )


def _chunk_sizes(num_queries: int, num_database: int, budget: int) -> tuple[int, int]:
    """Choose `[query_chunk, database_chunk]` with `12 * product <= budget` where possible."""
    max_elements = max(budget // _BYTES_PER_SCORE, 8 * 128)
    max_query_chunk = min(_MAX_QUERY_CHUNK, max(8, (max_elements // 128) // 8 * 8))
    num_query_chunks = -(-num_queries // max_query_chunk)
    query_chunk = _round_up(-(-num_queries // num_query_chunks), 8)

    max_database_chunk = max(128, (max_elements // query_chunk) // 128 * 128)
    num_chunks = -(-num_database // max_database_chunk)
    database_chunk = _round_up(-(-num_database // num_chunks), 128)
    return query_chunk, database_chunk


def _rerank_group(query_chunk: int, pool_size: int, num_features: int, budget: int) -> int:
    """Queries re-ranked at once: their gathered candidates (5 bytes each) fit a quarter budget."""
    group = max(1, (budget // 4) // (5 * pool_size * num_features))
    group = min(group, query_chunk)
    while query_chunk % group:
        group -= 1
    return group


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@functools.partial(
    jax.jit,
    static_argnames=(
        "k", "metric", "query_chunk", "database_chunk", "pool_size", "rerank_group"
    ),
)
def _search_jit(queries, database, *, k, metric, query_chunk, database_chunk, pool_size,
                rerank_group):
    queries, database = _to_compute_dtypes(_as_rows(queries), _as_rows(database))

    num_queries = queries.shape[0]
    padded_queries = _pad_rows(queries, _round_up(num_queries, query_chunk))
    query_chunks = padded_queries.reshape(-1, query_chunk, queries.shape[1])

    if metric == "l1":
        keys, indices = _direct_search(query_chunks, database, k=k, metric=metric)
    else:
        keys, indices = _l2_search(
            query_chunks, database, k=k, database_chunk=database_chunk,
            pool_size=pool_size, rerank_group=rerank_group,
        )
    keys = keys.reshape(-1, k)[:num_queries]
    indices = indices.reshape(-1, k)[:num_queries]
    return keys, indices


def _pad_rows(x: jax.Array, num_rows: int) -> jax.Array:
    return jnp.pad(x, ((0, num_rows - x.shape[0]), (0, 0)))


# ----------------------------------------------------------------------------
# Exact direct search (all of L1; the L2 fallback). The kernel reduces over a
# major axis of transposed tiles, so XLA vectorises along database rows
# without horizontal sums; docs/benchmarks.md compares the formulations.


def _row_blocks(num_rows: int, block: int) -> tuple[int, jax.Array, jax.Array]:
    """Cover `num_rows` rows with blocks of `block <= num_rows` rows, without padding.

    The last block starts early enough to fit, so it overlaps the one before;
    `nominal_starts` marks where each block's new rows begin. Returns the
    number of blocks, their start rows and their nominal starts.
    """
    num_blocks = -(-num_rows // block)
    nominal_starts = jnp.arange(num_blocks, dtype=jnp.int32) * block
    starts = jnp.minimum(nominal_starts, num_rows - block)
    return num_blocks, starts, nominal_starts


def _direct_search(query_chunks, database, *, k: int, metric: str):
    """Find the exact top-k for query chunks `[num_chunks, chunk, D]` in the whole database."""
    num_chunks, chunk, num_features = query_chunks.shape
    num_database = database.shape[0]
    padded_features = _round_up(num_features, _L1_INT16_GROUP)
    kernel_dtype = _kernel_dtype(query_chunks.dtype, metric)
    key_dtype = _key_dtype(query_chunks.dtype)

    query_tile = min(chunk, _DIRECT_QUERY_TILE)
    while chunk % query_tile:
        query_tile -= 1
    query_tiles = jnp.pad(query_chunks, ((0, 0), (0, 0), (0, padded_features - num_features)))
    query_tiles = query_tiles.reshape(-1, query_tile, padded_features).transpose(0, 2, 1)
    query_tiles = query_tiles.astype(kernel_dtype)

    tile = min(_DIRECT_DATABASE_TILE, num_database)
    _, starts, nominal_starts = _row_blocks(num_database, tile)
    init_keys = jnp.full((query_tiles.shape[0], query_tile, k), _sentinel(key_dtype))
    init_indices = jnp.full((query_tiles.shape[0], query_tile, k), _INDEX_SENTINEL, jnp.int32)

    def over_database(carry, xs):
        start, nominal_start = xs
        rows = lax.dynamic_slice_in_dim(database, start, tile)
        database_t = jnp.pad(rows, ((0, 0), (0, padded_features - num_features))).T
        database_t = database_t.astype(kernel_dtype)
        is_new = start + jnp.arange(tile, dtype=jnp.int32) >= nominal_start

        def over_queries(_, query_xs):
            query_t, keys, indices = query_xs
            tile_keys = _direct_kernel(query_t, database_t, metric)
            tile_keys = jnp.where(is_new[None, :], tile_keys, _sentinel(key_dtype))
            new_keys, new_indices = _tile_top_k(tile_keys, start, k=min(k, tile))
            return None, _merge_ascending(keys, indices, new_keys, new_indices, k=k)

        _, merged = lax.scan(over_queries, None, (query_tiles, *carry))
        return merged, None

    (keys, indices), _ = lax.scan(over_database, (init_keys, init_indices),
                                  (starts, nominal_starts))
    return keys.reshape(num_chunks, chunk, k), indices.reshape(num_chunks, chunk, k)


def _tile_top_k(keys: jax.Array, offset: jax.Array, *, k: int):
    """Return the top-k of a block `[rows, columns]` of keys, ties to the lower column."""
    negated, columns = lax.top_k(-_as_ordered_float(keys), k)
    return _from_ordered_float(-negated, keys.dtype), columns.astype(jnp.int32) + offset


def _merge_ascending(keys_a, indices_a, keys_b, indices_b, *, k: int):
    """`_merge_top_k` for sorted lists where every index in `a` is below those in `b`."""
    keys = _as_ordered_float(jnp.concatenate([keys_a, keys_b], axis=-1))
    indices = jnp.concatenate([indices_a, indices_b], axis=-1)
    negated, order = lax.top_k(-keys, k)
    return (
        _from_ordered_float(-negated, keys_a.dtype),
        jnp.take_along_axis(indices, order, axis=-1),
    )


def _as_ordered_float(keys: jax.Array) -> jax.Array:
    if keys.dtype != jnp.int32:
        return keys
    return lax.bitcast_convert_type(keys + jnp.int32(_INT_KEY_BIAS), jnp.float32)


def _from_ordered_float(values: jax.Array, key_dtype) -> jax.Array:
    if key_dtype != jnp.int32:
        return values
    return lax.bitcast_convert_type(values, jnp.int32) - jnp.int32(_INT_KEY_BIAS)


def _kernel_dtype(dtype, metric: str):
    if dtype != jnp.uint8:
        return jnp.float32
    return jnp.int16 if metric == "l1" else jnp.int32


def _direct_kernel(queries_t: jax.Array, database_t: jax.Array, metric: str) -> jax.Array:
    """Compute exact keys `[query_tile, database_tile]` from transposed tiles `[D, rows]`."""
    if metric == "l1" and queries_t.dtype == jnp.int16:
        return _l1_int16_kernel(queries_t, database_t)

    def step(feature, total):
        difference = queries_t[feature][:, None] - database_t[feature][None, :]
        if metric == "l1":
            return total + jnp.abs(difference)
        return total + difference * difference

    accumulator = jnp.zeros((queries_t.shape[1], database_t.shape[1]), queries_t.dtype)
    return lax.fori_loop(0, queries_t.shape[0], step, accumulator, unroll=8)


def _l1_int16_kernel(queries_t: jax.Array, database_t: jax.Array) -> jax.Array:
    """uint8 L1 with 32-lane int16 partial sums per 128 features, widened to int32."""
    shape = (queries_t.shape[1], database_t.shape[1])
    num_groups = queries_t.shape[0] // _L1_INT16_GROUP

    def group_sum(group, total):
        def step(i, partial):
            feature = group * _L1_INT16_GROUP + i
            difference = queries_t[feature][:, None] - database_t[feature][None, :]
            return partial + jnp.abs(difference)

        partial = lax.fori_loop(0, _L1_INT16_GROUP, step, jnp.zeros(shape, jnp.int16), unroll=8)
        return total + partial.astype(jnp.int32)

    return lax.fori_loop(0, num_groups, group_sum, jnp.zeros(shape, jnp.int32))


# ----------------------------------------------------------------------------
# L2: GEMM candidate pool, exact re-rank, certificate, exact fallback.


def _l2_search(query_chunks, database, *, k, database_chunk, pool_size, rerank_group):
    num_database, num_features = database.shape
    pool_scores, pool_indices = _candidate_pools(
        query_chunks, database, database_chunk=database_chunk, pool_size=pool_size
    )
    max_norm = jnp.sqrt(jnp.max(_squared_norms(database)).astype(jnp.float32))

    def one_query_chunk(_, xs):
        chunk_queries, chunk_scores, chunk_indices = xs
        keys, indices = _rerank(chunk_queries, database, chunk_indices, k=k, group=rerank_group)
        certified = _certify(
            chunk_queries, keys[:, k - 1], chunk_scores[:, -1], max_norm,
            num_features=num_features, pool_covers_database=pool_size >= num_database,
        )
        keys, indices = _exact_fallback(chunk_queries, database, keys, indices, certified, k=k)
        return None, (keys, indices)

    _, (keys, indices) = lax.scan(one_query_chunk, None,
                                  (query_chunks, pool_scores, pool_indices))
    return keys, indices


def _candidate_pools(query_chunks, database, *, database_chunk, pool_size):
    """Collect the `pool_size` smallest approximate scores `|b|^2 - 2 q.b` per query, ascending.

    Streams over database chunks (each converted to the GEMM dtype once) and,
    inside, over query chunks, keeping a running pool `[num_chunks, chunk,
    pool_size]` of scores and indices.
    """
    num_chunks, chunk, _ = query_chunks.shape
    num_database = database.shape[0]
    gemm_dtype = jnp.bfloat16 if database.dtype == jnp.uint8 else jnp.float32
    queries_lowp = query_chunks.astype(gemm_dtype)

    database_chunk = min(database_chunk, num_database)
    chunk_pool = min(pool_size, database_chunk)
    _, starts, nominal_starts = _row_blocks(num_database, database_chunk)
    init = (
        jnp.full((num_chunks, chunk, pool_size), jnp.inf, jnp.float32),
        jnp.full((num_chunks, chunk, pool_size), _INDEX_SENTINEL, jnp.int32),
    )

    def over_database(carry, xs):
        start, nominal_start = xs
        rows = lax.dynamic_slice_in_dim(database, start, database_chunk)
        norms = _squared_norms(rows).astype(jnp.float32)
        is_new = start + jnp.arange(database_chunk, dtype=jnp.int32) >= nominal_start
        norms = jnp.where(is_new, norms, jnp.inf)
        rows = rows.astype(gemm_dtype)

        def over_queries(_, query_xs):
            queries, pool_scores, pool_indices = query_xs
            dots = lax.dot_general(
                queries, rows, (((1,), (1,)), ((), ())),
                precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32,
            )
            scores = norms[None, :] - 2.0 * dots
            new_scores, new_indices = _tile_top_k(scores, start, k=chunk_pool)

            scores = jnp.concatenate([pool_scores, new_scores], axis=1)
            indices = jnp.concatenate([pool_indices, new_indices], axis=1)
            negated, order = lax.top_k(-scores, pool_size)
            return None, (-negated, jnp.take_along_axis(indices, order, axis=1))

        _, pools = lax.scan(over_queries, None, (queries_lowp, *carry))
        return pools, None

    pools, _ = lax.scan(over_database, init, (starts, nominal_starts))
    return pools


def _rerank(queries, database, pool_indices, *, k, group):
    """Re-rank the pool by exact keys, in groups of queries; keep the best `k` by key, then index."""
    num_database = database.shape[0]
    num_queries, pool_size = pool_indices.shape

    def one_group(_, xs):
        group_queries, group_indices = xs
        valid = group_indices < num_database
        candidates = database[jnp.minimum(group_indices, num_database - 1)]
        keys = _exact_key(group_queries[:, None, :], candidates, "l2")
        keys = jnp.where(valid, keys, _sentinel(keys.dtype))
        keys, indices = lax.sort((keys, group_indices), dimension=1, num_keys=2)
        return None, (keys[:, :k], indices[:, :k])

    xs = (
        queries.reshape(-1, group, queries.shape[1]),
        pool_indices.reshape(-1, group, pool_size),
    )
    _, (keys, indices) = lax.scan(one_group, None, xs)
    return keys.reshape(num_queries, k), indices.reshape(num_queries, k)


def _certify(queries, kth_keys, boundary_scores, max_norm, *, num_features,
             pool_covers_database):
    """True where no row outside the pool can be nearer than the exact k-th candidate.

    Every row outside the pool has approximate score >= `boundary_scores`. The
    GEMM score error is at most `eps = 2 * (gamma + 3u) * (max|b|^2 + 2 |q| max|b|)`,
    with `u = 2^-24` and `gamma = (D + 2) u / (1 - (D + 2) u)`. That is the
    classic bound for a float32-accumulated dot product in any summation
    order, `gamma * sum|q_i b_i| <= gamma |q| |b|` (Cauchy-Schwarz), plus the
    roundings of the norm and the subtraction. The factor 2 is margin for the
    float32 arithmetic of the check itself. uint8 pixels are exact in
    bfloat16, and float inputs add one rounding per product, inside `D + 2`.
    """
    if pool_covers_database:
        return jnp.ones(queries.shape[0], jnp.bool_)

    query_squared_norms = _squared_norms(queries)
    eps = _score_error_bound(query_squared_norms, max_norm, num_features=num_features)
    gamma = _gamma(num_features)

    if kth_keys.dtype == jnp.int32:
        kth_scores = (kth_keys - query_squared_norms).astype(jnp.float32)
    else:
        # Float keys carry their own relative error gamma; widen them by it.
        kth_scores = kth_keys * (1.0 + 2.0 * gamma) - query_squared_norms * (1.0 - 2.0 * gamma)

    return kth_scores < boundary_scores - eps


def _gamma(num_features: int) -> float:
    terms = num_features + 2
    return terms * _UNIT_ROUNDOFF / (1.0 - terms * _UNIT_ROUNDOFF)


def _score_error_bound(query_squared_norms, max_norm, *, num_features: int) -> jax.Array:
    """Bound `eps` `[num_queries]` on the error of every GEMM score; see `_certify`."""
    query_norms = jnp.sqrt(query_squared_norms.astype(jnp.float32))
    scale = max_norm * max_norm + 2.0 * query_norms * max_norm
    return 2.0 * (_gamma(num_features) + 3.0 * _UNIT_ROUNDOFF) * scale


def _exact_fallback(queries, database, keys, indices, certified, *, k):
    """Search the uncertified queries again exactly, `_FALLBACK_GROUP` at a time.

    Uncertified queries are moved to the front; each loop step searches the
    next group over the whole database. Certified queries that share a group
    are searched again too, which gives the same exact result.
    """
    num_queries = queries.shape[0]
    group = min(_FALLBACK_GROUP, num_queries)
    order = jnp.argsort(certified, stable=True).astype(jnp.int32)
    num_uncertified = jnp.sum(~certified).astype(jnp.int32)
    padded_order = jnp.pad(order, (0, _round_up(num_queries, group) - num_queries),
                           mode="edge")

    def not_done(state):
        start, _, _ = state
        return start < num_uncertified

    def search_group(state):
        start, keys, indices = state
        rows = lax.dynamic_slice(padded_order, (start,), (group,))
        group_keys, group_indices = _direct_search(queries[rows][None], database, k=k,
                                                   metric="l2")
        keys = keys.at[rows].set(group_keys[0])
        indices = indices.at[rows].set(group_indices[0])
        return start + group, keys, indices

    _, keys, indices = lax.while_loop(not_done, search_group, (jnp.int32(0), keys, indices))
    return keys, indices
