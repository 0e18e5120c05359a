"""Tests of the linear module, its losses and class templates against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclf.data import flatten, normalize
from jaxclf.linear import (
    LinearClassifier,
    class_templates,
    cross_entropy_loss,
    l2_penalty,
    multiclass_hinge_loss,
)

NUM_FEATURES = 32 * 32 * 3


def numpy_logits(images: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Float64 forward pass on pixels normalised as `(x / 255 - 0.5) / 0.5`."""
    rows = images.reshape(images.shape[0], -1).astype(np.float64)
    rows = (rows / 255.0 - 0.5) / 0.5
    return rows @ kernel.astype(np.float64).T + bias.astype(np.float64)


def numpy_hinge(logits: np.ndarray, labels: np.ndarray, margin: float) -> np.ndarray:
    """Per-example multiclass hinge loss, written as CS231n's loop."""
    losses = np.zeros(len(labels))
    for i, label in enumerate(labels):
        for j in range(logits.shape[1]):
            if j != label:
                losses[i] += max(0.0, logits[i, j] - logits[i, label] + margin)
    return losses


def test_cross_entropy_known_value():
    logits = jnp.array([[0.2, 0.1, 0.4, 0.6]], jnp.float32)
    loss = cross_entropy_loss(logits, jnp.array([3], jnp.int32))
    # log(e^0.2 + e^0.1 + e^0.4 + e^0.6) - 0.6
    np.testing.assert_allclose(float(loss), 1.1300, atol=1e-4)


def test_cross_entropy_rejects_label_out_of_range():
    logits = jnp.array([[0.2, 0.1, 0.4, 0.6]], jnp.float32)
    with pytest.raises(ValueError, match=r"= 4 is outside \[0, 4\)"):
        cross_entropy_loss(logits, jnp.array([4], jnp.int32))


@pytest.mark.parametrize("bad_label", [-1, 10])
def test_hinge_rejects_label_out_of_range(bad_label):
    logits = jnp.zeros((2, 10), jnp.float32)
    with pytest.raises(ValueError, match=f"= {bad_label} is outside"):
        multiclass_hinge_loss(logits, jnp.array([0, bad_label], jnp.int32))


def test_cross_entropy_mask_averages_real_examples():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6).astype(np.int32)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)

    masked = cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels), mask=jnp.asarray(mask))
    first_four = cross_entropy_loss(jnp.asarray(logits[:4]), jnp.asarray(labels[:4]))
    np.testing.assert_allclose(float(masked), float(first_four), rtol=1e-6)


@pytest.mark.parametrize("margin", [1.0, 0.5, 3.0])
def test_hinge_matches_numpy_loop(margin):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(32, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)

    loss = multiclass_hinge_loss(jnp.asarray(logits), jnp.asarray(labels), margin=margin)
    expected = numpy_hinge(logits.astype(np.float64), labels, margin).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, err_msg=f"margin {margin}")


def test_hinge_zero_when_margin_met():
    logits = jnp.array([[5.0, 0.0, 3.9], [0.0, 2.0, 0.5]], jnp.float32)
    loss = multiclass_hinge_loss(logits, jnp.array([0, 1], jnp.int32))
    assert float(loss) == 0.0


def test_l2_penalty_is_kernel_sum_of_squares():
    params = {"kernel": jnp.full((10, 4), 2.0, jnp.float32), "bias": jnp.ones(10, jnp.float32)}
    assert float(l2_penalty(params)) == 160.0, "bias must not be penalised"


@pytest.mark.parametrize("initializer", ["flax", "torch"])
def test_module_matches_numpy_forward(initializer):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    model = LinearClassifier(num_classes=10, initializer=initializer)
    params = model.init(jax.random.key(0), jnp.asarray(images))["params"]

    assert params["kernel"].shape == (10, NUM_FEATURES)
    assert params["bias"].shape == (10,)
    logits = model.apply({"params": params}, jnp.asarray(images))
    expected = numpy_logits(images, np.asarray(params["kernel"]), np.asarray(params["bias"]))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)


def test_float_images_are_taken_as_normalised():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    model = LinearClassifier()
    variables = model.init(jax.random.key(1), jnp.asarray(images))

    from_pixels = model.apply(variables, jnp.asarray(images))
    from_floats = model.apply(variables, normalize(images))
    np.testing.assert_array_equal(np.asarray(from_pixels), np.asarray(from_floats))


def test_torch_initializer_bounds():
    model = LinearClassifier(initializer="torch")
    params = model.init(jax.random.key(4), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    bound = 1.0 / np.sqrt(NUM_FEATURES)
    kernel, bias = np.asarray(params["kernel"]), np.asarray(params["bias"])

    assert np.all(np.abs(kernel) <= bound), f"kernel outside +-{bound}"
    assert np.all(np.abs(bias) <= bound), f"bias outside +-{bound}"
    assert np.any(bias != 0.0), "torch rule draws the bias too"
    # Uniform on [-b, b] has standard deviation b / sqrt(3).
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.02)


def test_flax_initializer_is_lecun_normal():
    model = LinearClassifier(initializer="flax")
    params = model.init(jax.random.key(5), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    kernel = np.asarray(params["kernel"])

    assert np.all(np.asarray(params["bias"]) == 0.0)
    # LeCun normal: variance 1 / fan_in, with fan_in the 3072 features.
    np.testing.assert_allclose(kernel.std(), 1.0 / np.sqrt(NUM_FEATURES), rtol=0.03)


def test_unknown_initializer_rejected():
    with pytest.raises(ValueError, match="initializer must be one of"):
        LinearClassifier(initializer="xavier").init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8)
        )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 3072), np.uint8), "must have shape"),
        (np.zeros((4, 32, 32, 3), np.int32), "must be uint8 pixels or normalised floats"),
    ],
)
def test_module_rejects_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        LinearClassifier().init(jax.random.key(0), jnp.asarray(images))


def test_class_template_reproduces_image():
    image = np.zeros((32, 32, 3), np.float32)
    image[:16, :16, 0] = 1.0  # red in the top-left 16x16, black elsewhere
    kernel = np.zeros((10, NUM_FEATURES), np.float32)
    kernel[3] = np.asarray(flatten(image[None]))[0]

    templates = class_templates({"kernel": jnp.asarray(kernel), "bias": jnp.zeros(10)})
    assert templates.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(np.asarray(templates[3]), image)
    np.testing.assert_array_equal(np.asarray(templates[2]), np.zeros((32, 32, 3)))


@pytest.mark.parametrize("num_classes", [0, -1])
def test_bad_num_classes_rejected(num_classes):
    model = LinearClassifier(num_classes=num_classes)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))
