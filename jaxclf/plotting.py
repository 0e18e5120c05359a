"""Figures: class templates, confusion matrices and training curves.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so
it needs no display; save it with `figure.savefig(path)`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def scale_templates(templates: Any, *, shared_scale: bool = False) -> np.ndarray:
    """Min-max scale weight images into `[0, 1]` for display.

    Args:
        templates: `[num_classes, height, width, channels]` raw weights.
        shared_scale: scale all templates with one minimum and maximum
            (compares magnitudes across classes) instead of each on its own
            (shows each template's pattern at full contrast).

    Returns:
        float64 array of the same shape. A template (or, with
        `shared_scale`, a whole set) whose values are all equal becomes
        mid-grey 0.5, without dividing by zero.
    """
    templates = np.asarray(templates, np.float64)
    if templates.ndim != 4:
        raise ValueError(
            f"templates must have shape [num_classes, height, width, channels], got {templates.shape}"
        )
    axes = None if shared_scale else (1, 2, 3)
    low = templates.min(axis=axes, keepdims=True)
    high = templates.max(axis=axes, keepdims=True)
    spread = high - low

    constant = spread == 0
    scaled = (templates - low) / np.where(constant, 1.0, spread)
    return np.where(constant, 0.5, scaled)


def plot_class_templates(
    templates: Any,
    class_names: Sequence[str],
    *,
    shared_scale: bool = False,
    columns: int = 5,
) -> Figure:
    """Draw each class's weight image in a grid (2 x 5 for CIFAR-10), titled by class.

    Args:
        templates: `[num_classes, height, width, channels]` raw weights, e.g.
            from `jaxclf.class_templates(params)`.
        class_names: one title per class.
        shared_scale: one colour scale for all templates; see `scale_templates`.
        columns: templates per row.

    Returns:
        The figure.
    """
    images = scale_templates(templates, shared_scale=shared_scale)
    if len(class_names) != images.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for {images.shape[0]} templates")
    rows = -(-images.shape[0] // columns)

    figure = Figure(figsize=(2.0 * columns, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < images.shape[0]:
            axis.imshow(images[index], interpolation="nearest", vmin=0.0, vmax=1.0)
            axis.set_title(class_names[index])
    scale = "one shared scale" if shared_scale else "each scaled on its own"
    figure.suptitle(f"Class templates (weight rows, {scale})")
    return figure


def plot_confusion_matrix(
    matrix: Any, class_names: Sequence[str], *, title: str = "Confusion matrix"
) -> Figure:
    """Draw a confusion matrix (rows true classes, columns predictions) with counts.

    Args:
        matrix: `[num_classes, num_classes]` counts, e.g. from
            `jaxclf.confusion_matrix`.
        class_names: one label per class.
        title: figure title.

    Returns:
        The figure.
    """
    matrix = np.asarray(matrix)
    num_classes = matrix.shape[0]
    figure = Figure(figsize=(1.0 + 0.75 * num_classes, 0.6 + 0.7 * num_classes), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, label="examples")

    axis.set_xticks(range(num_classes), labels=class_names, rotation=45, ha="right")
    axis.set_yticks(range(num_classes), labels=class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(num_classes):
        for column in range(num_classes):
            colour = "white" if matrix[row, column] > threshold else "black"
            axis.text(column, row, str(matrix[row, column]), ha="center", va="center", color=colour, fontsize=8)
    return figure


def plot_training_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Draw loss and accuracy per epoch, train and (when present) validation.

    Args:
        history: one record per epoch with `"epoch"`, `"train_loss"`,
            `"train_accuracy"` and optionally `"validation_loss"` and
            `"validation_accuracy"`, as `jaxclf.fit` returns.

    Returns:
        The figure, loss on the left and accuracy on the right.
    """
    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axis, accuracy_axis = figure.subplots(1, 2)

    for axis, metric, label in ((loss_axis, "loss", "loss"), (accuracy_axis, "accuracy", "accuracy")):
        for split in ("train", "validation"):
            key = f"{split}_{metric}"
            if all(key in record for record in history):
                axis.plot(epochs, [record[key] for record in history], marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    loss_axis.set_title("Loss per epoch")
    accuracy_axis.set_title("Accuracy per epoch")
    return figure


def plot_cross_validation(
    ks: Sequence[int], mean: Any, std: Any, metrics: Sequence[str]
) -> Figure:
    """Draw cross-validated accuracy against k, one line per metric, error bars of one std.

    Args:
        ks: the values of k.
        mean: `[num_metrics, num_ks]` mean accuracy over folds (a fraction).
        std: `[num_metrics, num_ks]` standard deviation over folds.
        metrics: one name per row of `mean`.

    Returns:
        The figure.
    """
    mean, std = np.asarray(mean), np.asarray(std)
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axis = figure.subplots()
    for row, metric in enumerate(metrics):
        axis.errorbar(ks, mean[row], yerr=std[row], marker="o", capsize=3, label=metric)
    axis.set_xlabel("k (neighbours)")
    axis.set_ylabel("cross-validation accuracy")
    axis.set_title("Cross-validation on k (error bars: one standard deviation over folds)")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def plot_nearest_neighbors(
    query_images: Any,
    neighbor_images: Any,
    *,
    query_titles: Sequence[str] | None = None,
    neighbor_titles: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """Draw each query image in the first column and its nearest training images beside it.

    Args:
        query_images: uint8 `[num_queries, height, width, channels]`.
        neighbor_images: uint8 `[num_queries, k, height, width, channels]`,
            nearest first.
        query_titles: optional title per query, e.g. its class.
        neighbor_titles: optional `[num_queries][k]` titles, e.g. classes.

    Returns:
        The figure, `num_queries` rows by `k + 1` columns.
    """
    query_images, neighbor_images = np.asarray(query_images), np.asarray(neighbor_images)
    num_queries, k = neighbor_images.shape[:2]
    figure = Figure(figsize=(1.3 * (k + 1), 1.4 * num_queries), layout="constrained")
    axes = figure.subplots(num_queries, k + 1, squeeze=False)

    for row in range(num_queries):
        axes[row, 0].imshow(query_images[row], interpolation="nearest")
        if query_titles is not None:
            axes[row, 0].set_title(f"test: {query_titles[row]}", fontsize=7)
        for column in range(k):
            axes[row, column + 1].imshow(neighbor_images[row, column], interpolation="nearest")
            if neighbor_titles is not None:
                axes[row, column + 1].set_title(neighbor_titles[row][column], fontsize=7)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle("Test images (left) and their nearest training images, nearest first")
    return figure
