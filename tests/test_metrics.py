"""Tests of accuracy, per-class accuracy and the confusion matrix against scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics

from jaxclf.metrics import accuracy, confusion_matrix, per_class_accuracy


def test_per_class_accuracy_marks_empty_classes_undefined():
    result = np.asarray(per_class_accuracy([0, 0, 1], [0, 1, 1], num_classes=10))

    assert result.shape == (10,)
    assert result[0] == 0.5
    assert result[1] == 1.0
    assert np.all(np.isnan(result[2:])), f"classes without examples must be NaN, got {result[2:]}"


def test_per_class_accuracy_zero_is_not_undefined():
    result = np.asarray(per_class_accuracy([2, 2], [1, 1], num_classes=3))
    assert result[2] == 0.0, "a class always predicted wrong has accuracy 0, not NaN"
    assert np.isnan(result[0]), "class 0 has no examples"
    assert np.isnan(result[1]), "class 1 has no examples"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, 500)
    predictions = np.where(rng.random(500) < 0.4, labels, rng.integers(0, 10, 500))

    expected_matrix = sklearn.metrics.confusion_matrix(labels, predictions, labels=range(10))
    np.testing.assert_array_equal(
        np.asarray(confusion_matrix(labels, predictions, num_classes=10)), expected_matrix
    )
    np.testing.assert_allclose(
        float(accuracy(labels, predictions)),
        sklearn.metrics.accuracy_score(labels, predictions),
        rtol=1e-6,
    )
    expected_recall = sklearn.metrics.recall_score(labels, predictions, average=None, labels=range(10))
    np.testing.assert_allclose(
        np.asarray(per_class_accuracy(labels, predictions, num_classes=10)), expected_recall, rtol=1e-6
    )


def test_confusion_matrix_rows_are_true_classes():
    matrix = np.asarray(confusion_matrix([0, 0, 2], [1, 1, 2], num_classes=3))
    assert matrix[0, 1] == 2, "two examples of class 0 predicted as 1"
    assert matrix[2, 2] == 1
    assert matrix.sum() == 3


def test_metrics_are_jit_safe():
    labels = jnp.array([0, 1, 1, 2], jnp.int32)
    predictions = jnp.array([0, 1, 0, 0], jnp.int32)
    jitted = jax.jit(lambda y, p: per_class_accuracy(y, p, num_classes=4))
    result = np.asarray(jitted(labels, predictions))
    np.testing.assert_array_equal(result[:3], [1.0, 0.5, 0.0])
    assert np.isnan(result[3])


@pytest.mark.parametrize(
    "labels, predictions, message",
    [
        ([0, 1], [0], "must both have shape"),
        ([0.0, 1.0], [0, 1], "labels must be integer"),
        ([0, 1], [0.5, 1.0], "predictions must be integer"),
    ],
)
def test_metrics_reject_bad_input(labels, predictions, message):
    with pytest.raises(ValueError, match=message):
        accuracy(np.asarray(labels), np.asarray(predictions))


@pytest.mark.parametrize("function", [accuracy, confusion_matrix, per_class_accuracy])
@pytest.mark.parametrize("labels, predictions, name",
                         [([2**32 + 1], [1], "labels"), ([1], [-(2**40)], "predictions")])
def test_metrics_reject_labels_beyond_int32(function, labels, predictions, name):
    options = {} if function is accuracy else {"num_classes": 3}
    with pytest.raises(ValueError, match=rf"{name} must be class indices that fit in int32"):
        function(np.array(labels, np.int64), np.array(predictions, np.int64), **options)


@pytest.mark.parametrize("function", [confusion_matrix, per_class_accuracy])
@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_metrics_reject_bad_num_classes(function, num_classes):
    with pytest.raises(ValueError, match=r"num_classes must be a positive int"):
        function(np.array([0, 1]), np.array([0, 1]), num_classes=num_classes)
