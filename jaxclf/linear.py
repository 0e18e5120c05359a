"""The linear classifier: a Flax module over flattened pixels and its losses.

The weight is stored `[num_classes, features]`, the layout of
`torch.nn.Linear`, so that parameters carry over to and from PyTorch
unchanged and row `c` is the template of class `c`. The layout is also the
fast one on XLA:CPU: the weight gradient `dlogits^T @ x` comes out in the
stored layout, while `flax.linen.Dense`'s `[features, num_classes]` makes
XLA:CPU transpose it (see docs/benchmarks.md for the measured epochs).

Features follow `jaxclf.data.flatten`: feature `(row * 32 + col) * 3 +
channel` is pixel `(row, col)` of that channel.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxclf.data import flatten, normalize, unflatten

Initializer = Literal["flax", "torch"]
INITIALIZERS: tuple[str, ...] = ("flax", "torch")


class LinearClassifier(nn.Module):
    """One dense layer from flattened pixels to class scores.

    Images may be uint8 pixels, which the module normalises with
    `jaxclf.data.normalize` to `[-1, 1]`, or floats, which it takes as
    already normalised and only casts to float32. The module cannot check
    float values under `jax.jit`, but `jaxclf.training`'s `train_step`,
    `train_epoch` and `evaluate` reject concrete float images that are not
    finite or look like raw 0..255 pixels.

    Attributes:
        num_classes: number of classes, the rows of `kernel`, >= 1; checked
            when the module is called or initialised.
        initializer: `"flax"` draws the kernel from LeCun normal (Flax's `Dense`
            default, variance `1 / features`) and zeros the bias. `"torch"`
            draws kernel and bias uniformly from `[-1/sqrt(features),
            1/sqrt(features))`, the rule of `torch.nn.Linear`.

    Parameters (`variables["params"]`):
        kernel: `[num_classes, features]` float32, one row per class.
        bias: `[num_classes]` float32.
    """

    num_classes: int = 10
    # Not named `init`, which would hide `flax.linen.Module.init`.
    initializer: Initializer = "flax"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Compute class scores.

        Args:
            images: `[batch, height, width, channels]`, uint8 pixels or
                normalised floats.

        Returns:
            logits `[batch, num_classes]`, float32.
        """
        check_images(images)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        features = flatten(to_features(images))
        num_features = features.shape[-1]

        kernel_init, bias_init = _initializers(self.initializer, num_features)
        kernel = self.param("kernel", kernel_init, (self.num_classes, num_features), jnp.float32)
        bias = self.param("bias", bias_init, (self.num_classes,), jnp.float32)

        logits = lax.dot_general(features, kernel, (((1,), (1,)), ((), ())))
        return logits + bias[None, :]


def to_features(images: jax.Array) -> jax.Array:
    """Normalise uint8 pixels to `[-1, 1]`; cast any other images to float32."""
    if images.dtype == jnp.uint8:
        return normalize(images)
    return images.astype(jnp.float32)


def check_images(images: Any, *, name: str = "images") -> None:
    """Raise ValueError unless `images` is `[batch, height, width, channels]` uint8 or float."""
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"{name} must have shape [batch, height, width, channels], got shape {shape}; "
            "reshape flat rows with jaxclf.data.unflatten"
        )
    if not (dtype == np.uint8 or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(
            f"{name} must be uint8 pixels or normalised floats, got dtype {dtype}; "
            "cast pixels to uint8 or normalise them with jaxclf.data.normalize"
        )


def check_labels(labels: Any, num_classes: int, *, name: str = "labels") -> None:
    """Raise ValueError unless `labels` are integers in `[0, num_classes)`.

    The value check needs concrete labels, so it is skipped under `jax.jit`,
    where an out-of-range label would silently count as no class.
    """
    dtype = getattr(labels, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got {type(labels).__name__} {dtype}")
    if isinstance(labels, jax.core.Tracer):
        return

    values = np.asarray(labels)
    invalid = np.flatnonzero((values < 0) | (values >= num_classes))
    if invalid.size:
        first = int(invalid[0])
        raise ValueError(
            f"{name}[{first}] = {int(values.flat[first])} is outside [0, {num_classes}) "
            f"({invalid.size} invalid labels in all); labels must be class indices "
            f"0..{num_classes - 1}"
        )


def cross_entropy_loss(
    logits: jax.Array, labels: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
    """Mean softmax cross-entropy over the real examples.

    Args:
        logits: `[batch, num_classes]`.
        labels: `[batch]` int class indices in `[0, num_classes)`; checked
            outside `jax.jit`.
        mask: optional `[batch]` weights, 1 for real examples and 0 for
            padding; the mean divides by `sum(mask)`.

    Returns:
        float32 scalar.
    """
    return _masked_mean(cross_entropy_per_example(logits, labels), mask)


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of each example, `[batch]` float32."""
    check_labels(labels, logits.shape[-1])
    logits = logits.astype(jnp.float32)

    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
    label_logits = jnp.sum(logits * _one_hot(labels, logits.shape[-1]), axis=-1)
    return log_normalizer - label_logits


def multiclass_hinge_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 1.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean multiclass hinge (SVM) loss over the real examples.

    Each example contributes `sum over j != label of max(0, logits[j] -
    logits[label] + margin)`, the Weston-Watkins form used by CS231n.

    Args:
        logits: `[batch, num_classes]`.
        labels: `[batch]` int class indices in `[0, num_classes)`; checked
            outside `jax.jit`.
        margin: required gap between the label's score and every other score.
        mask: optional `[batch]` weights, as for `cross_entropy_loss`.

    Returns:
        float32 scalar.
    """
    return _masked_mean(multiclass_hinge_per_example(logits, labels, margin=margin), mask)


def multiclass_hinge_per_example(
    logits: jax.Array, labels: jax.Array, *, margin: float = 1.0
) -> jax.Array:
    """Multiclass hinge loss of each example, `[batch]` float32."""
    check_labels(labels, logits.shape[-1])
    logits = logits.astype(jnp.float32)
    one_hot = _one_hot(labels, logits.shape[-1])

    label_logits = jnp.sum(logits * one_hot, axis=-1, keepdims=True)
    margins = jnp.maximum(logits - label_logits + jnp.float32(margin), jnp.float32(0.0))
    return jnp.sum(margins * (jnp.float32(1.0) - one_hot), axis=-1)


LOSSES = {
    "cross_entropy": cross_entropy_per_example,
    "hinge": multiclass_hinge_per_example,
}


def l2_penalty(params: Any) -> jax.Array:
    """Sum of squared kernel weights, `sum(kernel ** 2)`; the bias is not penalised.

    Training adds `l2 * l2_penalty(params)` to the data loss, the
    regularisation term of CS231n's softmax and SVM classifiers.
    """
    kernel = params["kernel"]
    return jnp.sum(jnp.square(kernel.astype(jnp.float32)))


def class_templates(params: Any, *, image_shape: tuple[int, int, int] = (32, 32, 3)) -> jax.Array:
    """Reshape each class's weight row into an image.

    Args:
        params: `{"kernel": [num_classes, features], ...}`.
        image_shape: `(height, width, channels)` whose product is `features`.

    Returns:
        `[num_classes, *image_shape]`, the raw (unscaled) weights.
    """
    return unflatten(params["kernel"], image_shape)


def _initializers(initializer: str, num_features: int):
    if initializer == "flax":
        kernel_init = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
        return kernel_init, nn.initializers.zeros_init()
    if initializer == "torch":
        bound = 1.0 / np.sqrt(num_features)
        return _uniform(bound), _uniform(bound)
    raise ValueError(f"initializer must be one of {INITIALIZERS}, got {initializer!r}")


def _uniform(bound: float):
    def initializer(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return initializer


def _one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
    # A comparison with iota, not take_along_axis, whose gradient is a scatter
    # that XLA:CPU runs far slower than this elementwise product.
    classes = lax.broadcasted_iota(jnp.int32, (1, num_classes), 1)
    return (labels.astype(jnp.int32)[:, None] == classes).astype(jnp.float32)


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.sum(mask)
