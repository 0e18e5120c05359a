"""Classification metrics: accuracy, per-class accuracy and the confusion matrix.

All three take `labels` (true classes) before `predictions`, as
scikit-learn's metrics do, and are jit-safe when `num_classes` is static.
"""

import jax
import jax.numpy as jnp
import numpy as np


def accuracy(labels: jax.typing.ArrayLike, predictions: jax.typing.ArrayLike) -> jax.Array:
    """Fraction of examples whose prediction equals the label.

    Args:
        labels: `[N]` int true classes.
        predictions: `[N]` int predicted classes.

    Returns:
        float32 scalar in `[0, 1]`; NaN when N is 0.
    """
    labels, predictions = _check_pair(labels, predictions)
    return jnp.mean((labels == predictions).astype(jnp.float32))


def confusion_matrix(
    labels: jax.typing.ArrayLike, predictions: jax.typing.ArrayLike, *, num_classes: int
) -> jax.Array:
    """Count examples per (true class, predicted class).

    Args:
        labels: `[N]` int true classes in `[0, num_classes)`.
        predictions: `[N]` int predicted classes in `[0, num_classes)`.
        num_classes: number of classes.

    Returns:
        `[num_classes, num_classes]` int32; entry `[i, j]` counts examples of
        class `i` predicted as `j` (rows are true classes, as in
        scikit-learn). Values outside `[0, num_classes)` are not counted.

    Raises:
        ValueError: non-integer labels or predictions, values that do not
            fit in int32, or `num_classes` not a positive int.
    """
    _check_num_classes(num_classes)
    labels, predictions = _check_pair(labels, predictions)
    flat_index = labels * num_classes + predictions
    valid = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
    counts = jnp.zeros((num_classes * num_classes,), jnp.int32)
    counts = counts.at[jnp.where(valid, flat_index, num_classes * num_classes)].add(
        jnp.int32(1), mode="drop"
    )
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(
    labels: jax.typing.ArrayLike, predictions: jax.typing.ArrayLike, *, num_classes: int
) -> jax.Array:
    """Accuracy within each true class (the recall of each class).

    A class with no examples has no accuracy: its entry is NaN, never 0,
    so that it cannot be mistaken for a class the model always gets wrong.
    Use `jnp.isnan` to find such classes and `jnp.nanmean` to average the
    others.

    Args:
        labels: `[N]` int true classes in `[0, num_classes)`.
        predictions: `[N]` int predicted classes.
        num_classes: number of classes.

    Returns:
        `[num_classes]` float32; entry `c` is (examples of class `c`
        predicted as `c`) / (examples of class `c`), or NaN when class `c`
        has no examples.
    """
    _check_num_classes(num_classes)
    matrix = confusion_matrix(labels, predictions, num_classes=num_classes)
    totals = jnp.sum(matrix, axis=1)
    correct = jnp.diagonal(matrix)
    ratio = correct.astype(jnp.float32) / jnp.maximum(totals, 1).astype(jnp.float32)
    return jnp.where(totals > 0, ratio, jnp.float32(jnp.nan))


def _check_num_classes(num_classes) -> None:
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _check_pair(labels, predictions) -> tuple[jax.Array, jax.Array]:
    labels = _as_array(labels)
    predictions = _as_array(predictions)
    if labels.ndim != 1 or labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must both have shape [N], got {labels.shape} and "
            f"{predictions.shape}"
        )
    int32 = np.iinfo(np.int32)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if not jnp.issubdtype(values.dtype, jnp.integer):
            raise ValueError(f"{name} must be integer class indices, got dtype {values.dtype}")
        # Checked in NumPy, before a 32-bit JAX array would wrap them.
        if isinstance(values, np.ndarray) and values.size:
            low, high = int(values.min()), int(values.max())
            if low < int32.min or high > int32.max:
                raise ValueError(
                    f"{name} must be class indices that fit in int32, got values from "
                    f"{low} to {high}"
                )
    return jnp.asarray(labels).astype(jnp.int32), jnp.asarray(predictions).astype(jnp.int32)


def _as_array(values):
    if isinstance(values, (jax.Array, jax.core.Tracer)):
        return values
    return np.asarray(values)
