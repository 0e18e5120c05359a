"""Validation splits and k-fold cross-validation of kNN's k and metric.

Cross-validation runs one exact top-`max(ks)` search per fold and metric and
derives every smaller k from its prefix. That is exact because the k nearest
neighbours are the first k of the `max(ks)` nearest, ties included: the
search orders equal distances by index.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxclf import knn


class CrossValidationResult(NamedTuple):
    """Accuracies of k-fold cross-validation, per metric and k.

    Attributes:
        metrics: the metrics, in the order of the first axis below.
        ks: the values of k, in the order of the second axis below.
        fold_accuracies: float `[num_metrics, num_ks, num_folds]`, the
            fraction of each held-out fold classified correctly.
        mean: float `[num_metrics, num_ks]`, mean over folds.
        std: float `[num_metrics, num_ks]`, population standard deviation
            over folds (`ddof=0`, as `numpy.std`).
    """

    metrics: tuple[str, ...]
    ks: tuple[int, ...]
    fold_accuracies: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def best(self) -> tuple[str, int]:
        """Return the `(metric, k)` with the highest mean accuracy.

        Ties go to the smaller k, then to the metric listed first.
        """
        order = [(m, j) for j in np.argsort(self.ks, kind="stable") for m in range(len(self.metrics))]
        best_metric, best_k = max(order, key=lambda pair: self.mean[pair])
        return self.metrics[best_metric], self.ks[best_k]


def validation_split(
    images: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    validation_size: int,
    key: jax.Array,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split examples at random into a training and a validation part.

    Args:
        images: `[N, ...]`, any dtype.
        labels: `[N]`.
        validation_size: examples in the validation part, `1..N-1`.
        key: from `jax.random.key(seed)`; the same key gives the same split.

    Returns:
        `((train_images, train_labels), (validation_images, validation_labels))`
        as NumPy arrays; the validation part takes the first
        `validation_size` positions of `jax.random.permutation(key, N)`.
    """
    images, labels = _check_examples(images, labels)
    _check_key(key)
    num_examples = len(labels)
    if not 1 <= validation_size < num_examples:
        raise ValueError(
            f"validation_size must be between 1 and {num_examples - 1} (examples minus one), "
            f"got {validation_size}"
        )

    permutation = np.asarray(jax.random.permutation(key, num_examples))
    validation, train = permutation[:validation_size], permutation[validation_size:]
    return (images[train], labels[train]), (images[validation], labels[validation])


def kfold_indices(num_examples: int, *, num_folds: int, key: jax.Array) -> list[np.ndarray]:
    """Split `range(num_examples)` at random into `num_folds` folds.

    Fold sizes differ by at most one, as in `numpy.array_split`.

    Returns:
        `num_folds` int arrays of example indices.
    """
    _check_key(key)
    if not 2 <= num_folds <= num_examples:
        raise ValueError(
            f"num_folds must be between 2 and the number of examples {num_examples}, "
            f"got {num_folds}"
        )
    permutation = np.asarray(jax.random.permutation(key, num_examples))
    return np.array_split(permutation, num_folds)


def accuracy_for_each_k(
    queries: jax.typing.ArrayLike,
    query_labels: jax.typing.ArrayLike,
    database: jax.typing.ArrayLike,
    database_labels: jax.typing.ArrayLike,
    *,
    ks: Sequence[int],
    metric: knn.Metric = "l2",
    num_classes: int = 10,
    memory_budget_bytes: int = knn.DEFAULT_MEMORY_BUDGET_BYTES,
    mesh: jax.sharding.Mesh | None = None,
) -> np.ndarray:
    """Classify `queries` with every k in `ks` from one top-`max(ks)` search.

    `mesh` runs the search on several devices, as in `knn.nearest_neighbors`.

    Returns:
        float64 accuracies `[len(ks)]`, in the order of `ks`.

    Raises:
        ValueError: labels that are not integers in `[0, num_classes)`, or
            bad search options (see `knn.nearest_neighbors`).
    """
    query_labels = np.asarray(knn._check_class_indices("query_labels", query_labels, num_classes))
    database_labels = knn._check_class_indices("database_labels", database_labels, num_classes)
    _, indices = knn.nearest_neighbors(
        queries, database, k=max(ks), metric=metric, memory_budget_bytes=memory_budget_bytes,
        mesh=mesh,
    )
    neighbor_labels = database_labels[indices]

    accuracies = []
    for k in ks:
        votes = knn.vote(neighbor_labels[:, :k], num_classes=num_classes)
        predicted = np.asarray(jnp.argmax(votes, axis=-1))
        accuracies.append(np.mean(predicted == query_labels))
    return np.asarray(accuracies, np.float64)


def cross_validate(
    images: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    ks: Sequence[int],
    metrics: Sequence[knn.Metric] = ("l2",),
    num_folds: int = 5,
    key: jax.Array,
    num_classes: int = 10,
    memory_budget_bytes: int = knn.DEFAULT_MEMORY_BUDGET_BYTES,
    progress: Callable[[], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> CrossValidationResult:
    """Cross-validate kNN over every k in `ks` and every metric, with `num_folds` folds.

    Each fold in turn is classified using the other folds as the database.

    Args:
        images: `[N, D]` or `[N, H, W, C]`, uint8 or float.
        labels: int `[N]` in `[0, num_classes)`.
        ks: distinct ints to try, each `1 <= k <=` the smallest training part.
        metrics: any of `knn.METRICS`, or one of them as a string.
        num_folds: folds, `2..N`.
        key: from `jax.random.key(seed)`; picks the folds.
        num_classes: number of classes.
        memory_budget_bytes: see `knn.nearest_neighbors`.
        progress: called with no arguments after each (fold, metric) search,
            for example a tqdm bar's `update`.
        mesh: a device mesh to run every search on, as in
            `knn.nearest_neighbors`; the accuracies are the same.

    Returns:
        `CrossValidationResult` with accuracies per metric, k and fold.

    Raises:
        ValueError: labels that are not integers in `[0, num_classes)`, ks
            that are not distinct ints in range, unknown metrics, a `key`
            that is not from `jax.random.key`, or bad `num_folds`, before
            any search.
    """
    images, labels = _check_examples(images, labels)
    labels = np.asarray(knn._check_class_indices("labels", labels, num_classes))
    _check_key(key)
    ks = _check_ks(ks)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    folds = kfold_indices(len(labels), num_folds=num_folds, key=key)
    _check_options(ks, metrics, min_train=len(labels) - max(len(fold) for fold in folds))

    fold_accuracies = np.zeros((len(metrics), len(ks), num_folds))
    for fold_number, held_out in enumerate(folds):
        train = np.setdiff1d(np.arange(len(labels)), held_out, assume_unique=True)
        for metric_number, metric in enumerate(metrics):
            fold_accuracies[metric_number, :, fold_number] = accuracy_for_each_k(
                images[held_out], labels[held_out], images[train], labels[train],
                ks=ks, metric=metric, num_classes=num_classes,
                memory_budget_bytes=memory_budget_bytes, mesh=mesh,
            )
            if progress is not None:
                progress()

    return CrossValidationResult(
        metrics=metrics,
        ks=ks,
        fold_accuracies=fold_accuracies,
        mean=fold_accuracies.mean(axis=-1),
        std=fold_accuracies.std(axis=-1),
    )


def _check_examples(images, labels) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"labels must have shape [N] with N = len(images) = {len(images)}, "
            f"got shape {labels.shape}"
        )
    return images, labels


def _check_key(key) -> None:
    is_key = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not is_key or key.shape != ():
        raise ValueError(
            f"key must be a single key from jax.random.key(seed), got {key!r}; "
            f"pass jax.random.key(seed) instead"
        )


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(ks)
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise ValueError(f"every k must be an int, got {k!r} in ks={ks}")
    ks = tuple(int(k) for k in ks)
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a value, got ks={ks}; pass each k once")
    return ks


def _check_options(ks: tuple[int, ...], metrics: tuple[str, ...], *, min_train: int) -> None:
    if not ks:
        raise ValueError("ks is empty; pass at least one k")
    if min(ks) < 1 or max(ks) > min_train:
        raise ValueError(
            f"every k must be between 1 and the smallest training part {min_train}, got ks={ks}"
        )
    unknown = [metric for metric in metrics if metric not in knn.METRICS]
    if not metrics or unknown:
        raise ValueError(
            f"metrics must be a non-empty list of {', '.join(map(repr, knn.METRICS))}, "
            f"got {list(metrics)}"
        )
