"""The compiled exact search engine behind `jaxclf.knn`: ranking keys, chunked
top-k search, the direct kernels, and the L2 candidate pools and certificate.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxclf import data

_UNIT_ROUNDOFF = 2.0**-24  # float32
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
# A top-k merge with a stable signature, shared with the sharded search.


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
