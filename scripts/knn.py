"""k-nearest-neighbour classification of CIFAR-10 pixels, exact.

Two modes:

  evaluate (default)  classify the test split with --k and --metric against
                      the whole training split; writes results.json and
                      neighbors.png (test images beside their nearest
                      training images)
  --cross-validate    k-fold cross-validation of every k in --ks and metric
                      in --metrics on the training split only; writes
                      results.json and cross_validation.png (accuracy
                      against k, error bars of one standard deviation)

--subset N keeps the first N training and the first N test images.

Examples:

    python scripts/knn.py --k 1 --metric l1
    python scripts/knn.py --cross-validate --subset 5000 --ks 1,3,5,10,20,50,100
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_data_arguments,
    check_seed,
    prepare_output_dir,
    require_devices,
    require_non_negative,
    require_positive,
    run_script,
)

from jaxclf.data import CLASS_NAMES, load_cifar10  # noqa: E402
from jaxclf.knn import METRICS, nearest_neighbors, vote  # noqa: E402
from jaxclf.model_selection import cross_validate  # noqa: E402
from jaxclf.plotting import plot_cross_validation, plot_nearest_neighbors  # noqa: E402
from jaxclf.sharding import DATA_AXIS, QUERY_AXIS, describe_mesh, make_mesh  # noqa: E402

logger = logging.getLogger("knn")


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument in one line, exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def comma_separated(item_type):
    def parse(text: str) -> list:
        try:
            return [item_type(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {item_type.__name__}, got {text!r}"
            ) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, default=1,
                        help="neighbours that vote, in evaluate mode (default: 1)")
    parser.add_argument("--metric", choices=METRICS, default="l2",
                        help="distance in evaluate mode (default: l2)")

    parser.add_argument("--cross-validate", action="store_true",
                        help="cross-validate --ks and --metrics on the training split instead")
    parser.add_argument("--ks", type=comma_separated(int), default=[1, 3, 5, 8, 10, 12, 15, 20, 50, 100],
                        help="values of k to cross-validate (default: 1,3,5,8,10,12,15,20,50,100)")
    parser.add_argument("--metrics", type=comma_separated(str), default=["l1", "l2"],
                        help=f"metrics to cross-validate, from {', '.join(METRICS)} (default: l1,l2)")
    parser.add_argument("--folds", type=int, default=5,
                        help="cross-validation folds (default: 5)")

    parser.add_argument("--subset", type=int, default=None,
                        help="keep the first N training and the first N test images "
                        "(default: all 50,000 and 10,000)")
    parser.add_argument("--query-chunk", type=int, default=1000,
                        help="test images per compiled search call and progress step (default: 1000)")
    parser.add_argument("--memory-budget-mib", type=int, default=256,
                        help="bound on the distance blocks of one search step, in MiB (default: 256)")

    parser.add_argument("--grid-rows", type=int, default=8,
                        help="test images shown in neighbors.png, at most the test images "
                        "available; 0 skips the figure (default: 8)")
    parser.add_argument("--grid-neighbors", type=int, default=7,
                        help="nearest training images shown per test image in neighbors.png, at "
                        "most the training images available; 0 skips the figure (default: 7)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of jax.random.key that picks the folds, in [0, 2**32) "
                        "(default: 0)")
    add_data_arguments(parser)
    parser.add_argument("--output-dir", default="outputs/knn",
                        help="folder for results.json and the PNG figures (default: outputs/knn)")
    parser.add_argument("--devices", type=int, default=1,
                        help="devices to search on, the first N of jax.devices(); on CPU, simulate N "
                        "with XLA_FLAGS=--xla_force_host_platform_device_count=N (default: 1)")
    parser.add_argument("--split", choices=["database", "queries"], default="database",
                        help="with --devices above 1: split the training images (database) or the "
                        "test images (queries) over the devices; results are identical (default: database)")
    parser.add_argument("--verbose", action="store_true", help="log DEBUG messages too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen mode and write files; return 2 after one log line on invalid input."""
    return run_script(run, build_parser().parse_args(argv), logger)


def run(args: argparse.Namespace) -> None:
    """Check the arguments, run the chosen mode and write results.json."""
    check_arguments(args)
    args.mesh = device_mesh(args)
    output_dir = prepare_output_dir(args.output_dir)
    if args.cross_validate:
        results = cross_validation(args, output_dir)
    else:
        results = evaluation(args, output_dir)

    results.update(backend=jax.default_backend(), devices=[str(device) for device in jax.devices()])
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", output_dir / "results.json")


def check_arguments(args: argparse.Namespace) -> None:
    for name in ["k", "folds", "query-chunk", "memory-budget-mib"]:
        require_positive(name, getattr(args, name.replace("-", "_")))
    for name in ["grid-rows", "grid-neighbors"]:
        require_non_negative(name, getattr(args, name.replace("-", "_")))
    if args.folds < 2:
        raise ValueError(f"--folds must be 2 or more, got {args.folds}")
    check_seed(args.seed)
    require_devices(args.devices)
    if args.subset is not None:
        require_positive("subset", args.subset)
    unknown = [metric for metric in args.metrics if metric not in METRICS]
    if unknown or not args.metrics:
        raise ValueError(f"--metrics must list some of {', '.join(METRICS)}, got {args.metrics}")
    if not args.ks or min(args.ks) < 1:
        raise ValueError(f"--ks must list values of k of 1 or more, got {args.ks}")


def device_mesh(args: argparse.Namespace) -> jax.sharding.Mesh | None:
    """Build the mesh that --devices and --split ask for, or None for one device."""
    if args.devices == 1:
        return None
    axis_name = QUERY_AXIS if args.split == "queries" else DATA_AXIS
    mesh = make_mesh(args.devices, axis_name=axis_name)
    logger.info("searching on %s", describe_mesh(mesh))
    return mesh


def load_splits(args: argparse.Namespace):
    cifar = load_cifar10(args.data_dir, source=args.source, validation_size=0)
    train, test = cifar.train, cifar.test
    if args.subset is not None and args.subset > max(len(train.labels), len(test.labels)):
        logger.info(
            "--subset %d is above the %d training and %d test images, so all of them are used",
            args.subset, len(train.labels), len(test.labels),
        )
    if args.subset is not None:
        train = train._replace(images=train.images[: args.subset], labels=train.labels[: args.subset])
        test = test._replace(images=test.images[: args.subset], labels=test.labels[: args.subset])
    logger.info("%d training and %d test images", len(train.labels), len(test.labels))
    return train, test


def evaluation(args: argparse.Namespace, output_dir: Path) -> dict:
    train, test = load_splits(args)
    search_k = max(args.k, min(args.grid_neighbors, len(train.labels)))
    budget = args.memory_budget_mib * 2**20
    database = jnp.asarray(train.images)
    database_labels = jnp.asarray(train.labels)

    start = time.perf_counter()
    distances, indices = search_in_chunks(test.images, database, k=search_k, metric=args.metric,
                                          chunk=args.query_chunk, budget=budget, mesh=args.mesh)
    seconds = time.perf_counter() - start

    votes = vote(database_labels[indices[:, : args.k]], num_classes=len(CLASS_NAMES))
    predicted = np.asarray(jnp.argmax(votes, axis=-1))
    accuracy = float(np.mean(predicted == test.labels))
    logger.info("%s, k=%d: test accuracy %.4f (%d images); search took %.1f s",
                args.metric, args.k, accuracy, len(test.labels), seconds)

    if args.grid_rows and args.grid_neighbors:
        save_neighbor_grid(test, train, indices, args, output_dir / "neighbors.png")
    return {
        "mode": "evaluate", "metric": args.metric, "k": args.k, "accuracy": accuracy,
        "num_train": len(train.labels), "num_test": len(test.labels),
        "search_seconds": seconds, "predictions": predicted.tolist(),
    }  # fmt: skip


def search_in_chunks(queries, database, *, k, metric, chunk, budget, mesh):
    """Search `chunk` queries per call, the last chunk padded so nothing recompiles."""
    chunk = min(chunk, len(queries))
    all_distances, all_indices = [], []
    for start in tqdm(range(0, len(queries), chunk), desc=f"{metric} search", unit="chunk"):
        batch = queries[start : start + chunk]
        rows = len(batch)
        if rows < chunk:
            batch = np.concatenate([batch, np.zeros((chunk - rows, *batch.shape[1:]), batch.dtype)])
        distances, indices = nearest_neighbors(batch, database, k=k, metric=metric,
                                               memory_budget_bytes=budget, mesh=mesh)
        all_distances.append(np.asarray(distances[:rows]))
        all_indices.append(np.asarray(indices[:rows]))
    return np.concatenate(all_distances), np.concatenate(all_indices)


def save_neighbor_grid(test, train, indices, args, path: Path) -> None:
    rows = min(args.grid_rows, len(test.labels))
    shown = indices[:rows, : args.grid_neighbors]
    if rows < args.grid_rows or shown.shape[1] < args.grid_neighbors:
        logger.info("neighbors.png shows %d test images with %d neighbours each, all the data available",
                    rows, shown.shape[1])
    figure = plot_nearest_neighbors(
        test.images[:rows],
        train.images[shown],
        query_titles=[CLASS_NAMES[label] for label in test.labels[:rows]],
        neighbor_titles=[[CLASS_NAMES[train.labels[index]] for index in row] for row in shown],
    )
    figure.savefig(path, dpi=100)
    logger.info("wrote %s", path)


def cross_validation(args: argparse.Namespace, output_dir: Path) -> dict:
    train, _ = load_splits(args)
    if args.folds > len(train.labels):
        raise ValueError(
            f"--folds {args.folds} is above the {len(train.labels)} training images; pass fewer folds"
        )
    with tqdm(total=args.folds * len(args.metrics), desc="cross-validation", unit="search") as bar:
        result = cross_validate(
            train.images, train.labels, ks=args.ks, metrics=args.metrics, num_folds=args.folds,
            key=jax.random.key(args.seed), num_classes=len(CLASS_NAMES),
            memory_budget_bytes=args.memory_budget_mib * 2**20, progress=bar.update,
            mesh=args.mesh,
        )

    for row, metric in enumerate(result.metrics):
        for column, k in enumerate(result.ks):
            logger.info("%s k=%d: accuracy %.4f +- %.4f", metric, k,
                        result.mean[row, column], result.std[row, column])
    best_metric, best_k = result.best()
    logger.info("best: metric %s, k=%d; evaluate it on test with --metric %s --k %d",
                best_metric, best_k, best_metric, best_k)

    figure = plot_cross_validation(result.ks, result.mean, result.std, result.metrics)
    figure.savefig(output_dir / "cross_validation.png", dpi=100)
    logger.info("wrote %s", output_dir / "cross_validation.png")
    return {
        "mode": "cross_validate", "num_train": len(train.labels), "folds": args.folds,
        "seed": args.seed, "ks": list(result.ks), "metrics": list(result.metrics),
        "mean": result.mean.tolist(), "std": result.std.tolist(),
        "fold_accuracies": result.fold_accuracies.tolist(),
        "best_metric": best_metric, "best_k": best_k,
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
