"""Time several XLA formulations of the exact uint8 L1 distance on a fixed subset.

L1 has no GEMM form, so its speed depends on how XLA vectorises the
elementwise |q - b| and the sum over features. Each formulation computes all
int32 (or float32) L1 distances between the first --queries test images and
the first --database training images, in tiles, inside one jitted scan, and
is checked against a NumPy int32 reference. Prints a Markdown table: best and
worst of --repeats timed calls after one compiling call, throughput in
|q - b| terms per second, and the time that rate would give for the full
10,000 x 50,000 search (an estimate, without top-k).

Example:

    python scripts/benchmark_knn_l1.py --data-dir /path/to/cifar10
"""

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, log_devices, setup_logging  # noqa: E402

from jaxclf import _search, knn  # noqa: E402
from jaxclf.data import flatten, load_cifar10  # noqa: E402

logger = logging.getLogger("benchmark_knn_l1")
FULL_SEARCH_TERMS = 10_000 * 50_000 * 3072


def tiled(kernel: Callable, query_tile: int, database_tile: int, *, transpose: bool):
    """Jit a scan over query tiles and database tiles that returns `[queries, database]`."""

    def run(queries, database):
        num_queries, num_features = queries.shape
        query_tiles = queries.reshape(-1, query_tile, num_features)
        database_tiles = database.reshape(-1, database_tile, num_features)
        if transpose:
            query_tiles = query_tiles.transpose(0, 2, 1)
            database_tiles = database_tiles.transpose(0, 2, 1)

        def over_queries(_, query_block):
            def over_database(_, database_block):
                return None, kernel(query_block, database_block)

            return None, lax.scan(over_database, None, database_tiles)[1]

        blocks = lax.scan(over_queries, None, query_tiles)[1]
        return blocks.transpose(0, 2, 1, 3).reshape(num_queries, -1)

    return jax.jit(run)


def broadcast_minor(dtype):
    """Sum |q - b| of `[query_tile, database_tile, D]` over the minor feature axis."""

    def kernel(queries, database):
        difference = queries[:, None, :].astype(dtype) - database[None, :, :].astype(dtype)
        return jnp.sum(jnp.abs(difference), axis=-1, dtype=dtype)

    return kernel


def broadcast_major(dtype):
    """Sum |q - b| of transposed tiles `[query_tile, D, database_tile]` over D."""

    def kernel(queries_t, database_t):
        difference = queries_t.T[:, :, None].astype(dtype) - database_t[None, :, :].astype(dtype)
        return jnp.sum(jnp.abs(difference), axis=1, dtype=dtype)

    return kernel


def feature_loop(dtype):
    """Add |q_f - b_f| feature by feature (a fori_loop) into a `[query_tile, database_tile]` total."""

    def kernel(queries_t, database_t):
        return _search._direct_kernel(queries_t.astype(dtype), database_t.astype(dtype), "l1")

    return kernel


def int16_groups(queries_t, database_t):
    """Run the library kernel: int16 partial sums per 128 features, widened to int32."""
    return _search._l1_int16_kernel(queries_t.astype(jnp.int16), database_t.astype(jnp.int16))


FORMULATIONS = [
    ("broadcast, sum over minor axis, int32, 64x256", broadcast_minor(jnp.int32), 64, 256, False),
    ("broadcast, sum over minor axis, float32, 64x256", broadcast_minor(jnp.float32), 64, 256, False),
    ("transposed, sum over major axis, int32, 64x256", broadcast_major(jnp.int32), 64, 256, True),
    ("transposed, sum over major axis, float32, 64x256", broadcast_major(jnp.float32), 64, 256, True),
    ("feature loop, int32 total, 64x512", feature_loop(jnp.int32), 64, 512, True),
    ("feature loop, int32 total, 128x512", feature_loop(jnp.int32), 128, 512, True),
    ("feature loop, float32 total, 128x512", feature_loop(jnp.float32), 128, 512, True),
    ("feature loop, int16 per 128 features, 64x256", int16_groups, 64, 256, True),
    ("feature loop, int16 per 128 features, 128x512 (library)", int16_groups, 128, 512, True),
]


def time_call(function: Callable, arguments: tuple, repeats: int) -> tuple[list[float], object]:
    result = jax.block_until_ready(function(*arguments))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*arguments))
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=256,
                        help="test images, a multiple of 128 (default: 256)")
    parser.add_argument("--database", type=int, default=4096,
                        help="training images, a multiple of 512 (default: 4096)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls each (default: 3)")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    log_devices(logger)
    if args.queries % 128 or args.database % 512 or args.repeats < 1:
        logger.error("--queries must be a multiple of 128, --database of 512, --repeats >= 1")
        return 2

    cifar = load_cifar10(args.data_dir, source=args.source, validation_size=0)
    queries = jnp.asarray(flatten(cifar.test.images[: args.queries]))
    database = jnp.asarray(flatten(cifar.train.images[: args.database]))
    database_int32 = np.asarray(database, np.int32)
    expected = np.stack([np.abs(database_int32 - row).sum(axis=1) for row in np.asarray(queries, np.int32)])
    terms = args.queries * args.database * queries.shape[1]

    print(f"| formulation ({args.queries} x {args.database} x 3072) | best s | worst s "
          "| G terms/s | full search at that rate, s |")
    print("|---|---|---|---|---|")
    rows = [(name, tiled(kernel, query_tile, database_tile, transpose=transpose))
            for name, kernel, query_tile, database_tile, transpose in FORMULATIONS]
    rows.append(("library nearest_neighbors, k=10 (top-k included)",
                 lambda q, b: knn.nearest_neighbors(q, b, k=10, metric="l1")))
    for name, function in rows:
        times, result = time_call(function, (queries, database), args.repeats)
        if not isinstance(result, tuple):
            np.testing.assert_array_equal(np.asarray(result, np.int64), expected, err_msg=name)
        rate = terms / min(times)
        print(f"| {name} | {min(times):.3f} | {max(times):.3f} | {rate / 1e9:.1f} "
              f"| {FULL_SEARCH_TERMS / rate:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
