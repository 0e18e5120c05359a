"""Tests for validation splits and k-fold cross-validation of k and metric."""

import jax
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from jaxclf import model_selection

SKLEARN_METRIC = {"l1": "manhattan", "l2": "euclidean"}


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 90).astype(np.int32)
    # Class-dependent means, so that accuracy depends on k.
    images = np.clip(rng.normal(60 * labels[:, None] + 40, 60, (90, 48)), 0, 255).astype(np.uint8)
    return images, labels


def test_validation_split_is_a_partition(examples):
    images, labels = examples
    (train_images, train_labels), (val_images, val_labels) = model_selection.validation_split(
        images, labels, validation_size=20, key=jax.random.key(1)
    )
    assert len(val_labels) == 20
    assert len(train_labels) == 70
    merged = np.concatenate([train_images, val_images])
    assert sorted(map(bytes, merged)) == sorted(map(bytes, images))

    again = model_selection.validation_split(images, labels, validation_size=20,
                                             key=jax.random.key(1))
    np.testing.assert_array_equal(again[1][0], val_images)


def test_kfold_indices_cover_every_example_once():
    folds = model_selection.kfold_indices(23, num_folds=5, key=jax.random.key(0))
    assert sorted(len(fold) for fold in folds) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(23))


def test_cross_validate_matches_sklearn_folds(examples):
    images, labels = examples
    ks = (1, 3, 7, 20)
    result = model_selection.cross_validate(
        images, labels, ks=ks, metrics=("l1", "l2"), num_folds=3, key=jax.random.key(2)
    )
    assert result.fold_accuracies.shape == (2, 4, 3)

    folds = model_selection.kfold_indices(90, num_folds=3, key=jax.random.key(2))
    for row, metric in enumerate(("l1", "l2")):
        for column, k in enumerate(ks):
            accuracies = []
            for held_out in folds:
                train = np.setdiff1d(np.arange(90), held_out)
                classifier = KNeighborsClassifier(k, algorithm="brute", metric=SKLEARN_METRIC[metric])
                classifier.fit(images[train].astype(np.float64), labels[train])
                accuracies.append(classifier.score(images[held_out].astype(np.float64),
                                                   labels[held_out]))
            np.testing.assert_allclose(result.fold_accuracies[row, column], accuracies,
                                       err_msg=f"{metric} k={k}")
            np.testing.assert_allclose(result.mean[row, column], np.mean(accuracies))
            np.testing.assert_allclose(result.std[row, column], np.std(accuracies))


def test_best_prefers_smaller_k_on_ties():
    result = model_selection.CrossValidationResult(
        metrics=("l1", "l2"), ks=(5, 1, 3), fold_accuracies=np.zeros((2, 3, 1)),
        mean=np.array([[0.4, 0.3, 0.5], [0.2, 0.5, 0.1]]), std=np.zeros((2, 3)),
    )
    assert result.best() == ("l2", 1)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(ks=(0, 3)), r"between 1 and the smallest training part 60, got ks=\(0, 3\)"),
        (dict(ks=(61,)), r"smallest training part 60"),
        (dict(ks=()), r"ks is empty"),
        (dict(metrics=("cosine",)), r"got \['cosine'\]"),
        (dict(num_folds=1), r"num_folds must be between 2 and the number of examples 90, got 1"),
        (dict(ks=(1.9,)), r"every k must be an int, got 1.9"),
        (dict(ks=(True,)), r"every k must be an int, got True"),
        (dict(ks=(1, 1, 3)), r"ks must not repeat a value, got ks=\(1, 1, 3\)"),
        (dict(key=0), r"key must be a single key from jax.random.key\(seed\), got 0"),
        (dict(key=jax.random.split(jax.random.key(0))), r"key must be a single key"),
        (dict(labels_offset=10), r"labels must lie in \[0, num_classes=10\), got values from 10"),
        (dict(labels_offset=-1), r"labels must lie in \[0, num_classes=10\), got values from -1"),
        (dict(labels_dtype=np.float32), r"labels must be integers, got dtype float32"),
        (dict(labels_dtype=np.int64, labels_offset=2**32), r"got values from 4294967296"),
        (dict(num_classes=2.5), r"num_classes must be a positive int, got 2.5"),
    ],
)
def test_cross_validate_rejects_bad_options(examples, change, message):
    images, labels = examples
    change = dict(change)
    labels = labels.astype(change.pop("labels_dtype", labels.dtype))
    labels = labels + change.pop("labels_offset", 0)
    arguments = dict(ks=(1,), metrics=("l2",), num_folds=3, key=jax.random.key(0))
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        model_selection.cross_validate(images, labels, **arguments)


def test_cross_validate_takes_one_metric_as_a_string(examples):
    images, labels = examples
    arguments = dict(ks=(1, 3), num_folds=3, key=jax.random.key(0), num_classes=4)
    from_string = model_selection.cross_validate(images, labels, metrics="l1", **arguments)
    from_tuple = model_selection.cross_validate(images, labels, metrics=("l1",), **arguments)
    assert from_string.metrics == ("l1",)
    np.testing.assert_array_equal(from_string.fold_accuracies, from_tuple.fold_accuracies)


@pytest.mark.parametrize("split", ["validation_split", "kfold_indices"])
def test_splits_reject_an_integer_seed_as_key(examples, split):
    images, labels = examples
    with pytest.raises(ValueError, match=r"pass jax.random.key\(seed\)"):
        if split == "validation_split":
            model_selection.validation_split(images, labels, validation_size=10, key=0)
        else:
            model_selection.kfold_indices(90, num_folds=3, key=0)
