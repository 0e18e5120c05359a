"""Tests for CIFAR-10 loading, validation splits and the pixel conventions.

Small data sets are written into tmp_path in every on-disk layout; the real
copy named by JAXCLF_DATA_DIR is checked at the end of the file.
"""

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests

import jaxclf
from jaxclf import data

PER_BATCH = 6  # images per batch in the small data sets: 30 train, 6 test
NUM_TRAIN = 5 * PER_BATCH
TRAIN_NAMES = [f"data_batch_{number}" for number in range(1, 6)]

# A pixel with distinct R, G, B values at a known position of train image 0.
PIXEL_ROW, PIXEL_COL, PIXEL_RGB = 2, 5, (11, 22, 33)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Make every tfds download fail at once, so no test reaches the network."""
    from tensorflow_datasets.core.download import downloader

    def reject_download(url, **kwargs):
        raise requests.exceptions.ConnectionError(f"network disabled in tests: {url}")

    monkeypatch.setattr(downloader, "_open_url", reject_download)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def make_dataset(seed=0, num_train=NUM_TRAIN, num_test=PER_BATCH):
    """Random HWC images and labels, with the marked pixel in train image 0."""
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, (num_train, 32, 32, 3), dtype=np.uint8)
    train_labels = rng.integers(0, 10, num_train).astype(np.int32)
    test_images = rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, num_test).astype(np.int32)
    train_images[0, PIXEL_ROW, PIXEL_COL] = PIXEL_RGB
    return (train_images, train_labels), (test_images, test_labels)


def to_rows(images):
    """The release's channel-major rows: 1024 red, 1024 green, 1024 blue bytes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def batches(dataset):
    """Split a data set into the five train batches and the test batch."""
    (train_images, train_labels), test = dataset
    count = len(train_images) // 5
    for number, name in enumerate(TRAIN_NAMES):
        part = slice(number * count, (number + 1) * count)
        yield name, train_images[part], train_labels[part]
    yield "test_batch", *test


class Py2Pickler(pickle._Pickler):
    """Write str and bytes as Python 2 strings, as the canonical release does."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_numpy_global(self, obj, name=None):
        if obj.__module__.startswith("numpy._core.multiarray"):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + obj.__name__.encode() + b"\n")
            self.memoize(obj)
            return
        self.save_global(obj, name)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string
    dispatch[type(len)] = save_numpy_global


def pickle_batch(record, encoding):
    """Pickle one batch dict as the given flavour of file."""
    buffer = io.BytesIO()
    if encoding == "python2":  # str keys after loading with encoding="latin1"
        Py2Pickler(buffer, protocol=2).dump(record)
    elif encoding == "bytes-keys":  # a Python 2 file loaded with encoding="bytes", re-saved
        pickle.dump({key.encode(): value for key, value in record.items()}, buffer, protocol=2)
    else:
        pickle.dump(record, buffer, protocol=5)
    return buffer.getvalue()


def write_python(root, dataset, encoding="python2", label_override=None):
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, images, labels in batches(dataset):
        labels = [int(label) for label in labels]
        if label_override and name in label_override:
            labels[0] = label_override[name]
        record = {"batch_label": name, "labels": labels, "data": to_rows(images)}
        (folder / name).write_bytes(pickle_batch(record, encoding))
    return folder


def write_binary(root, dataset, label_override=None):
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, images, labels in batches(dataset):
        label_bytes = labels.astype(np.uint8)[:, None]
        if label_override and name in label_override:
            label_bytes[0] = label_override[name]
        records = np.concatenate([label_bytes, to_rows(images)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    return folder


def to_archive(folder):
    """Replace a layout folder with the tar.gz the canonical release ships."""
    names = {"cifar-10-batches-py": "cifar-10-python.tar.gz",
             "cifar-10-batches-bin": "cifar-10-binary.tar.gz"}
    archive = folder.parent / names[folder.name]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return archive


def assert_dataset_equal(cifar, dataset):
    (train_images, train_labels), (test_images, test_labels) = dataset
    np.testing.assert_array_equal(cifar.train.images, train_images, err_msg="train images")
    np.testing.assert_array_equal(cifar.train.labels, train_labels, err_msg="train labels")
    np.testing.assert_array_equal(cifar.test.images, test_images, err_msg="test images")
    np.testing.assert_array_equal(cifar.test.labels, test_labels, err_msg="test labels")


LAYOUTS = [
    ("python", "python2", False),
    ("python", "bytes-keys", False),
    ("python", "protocol5", False),
    ("python", "python2", True),
    ("python", "bytes-keys", True),
    ("binary", None, False),
    ("binary", None, True),
]


def write_layout(root, source, encoding, archived, dataset):
    if source == "python":
        location = write_python(root, dataset, encoding)
    else:
        location = write_binary(root, dataset)
    return to_archive(location) if archived else location


@pytest.mark.parametrize("source, encoding, archived", LAYOUTS)
def test_local_layout_exact_pixels(tmp_path, source, encoding, archived):
    dataset = make_dataset()
    write_layout(tmp_path, source, encoding, archived, dataset)

    for requested in (source, "auto"):
        cifar = data.load_cifar10(tmp_path, source=requested, validation_size=0)

        assert cifar.train.images.dtype == np.uint8
        assert cifar.train.images.shape == (NUM_TRAIN, 32, 32, 3)
        assert cifar.train.labels.dtype == np.int32
        assert cifar.test.images.shape == (PER_BATCH, 32, 32, 3)
        assert cifar.validation.images.shape == (0, 32, 32, 3)
        assert cifar.class_names == data.CLASS_NAMES
        assert_dataset_equal(cifar, dataset)


def test_channel_major_row_becomes_hwc(tmp_path):
    """Byte c*1024 + row*32 + col of a row is channel c of pixel (row, col)."""
    (train_images, train_labels), test = make_dataset()
    rows = np.zeros((NUM_TRAIN, 3072), np.uint8)
    for channel, value in enumerate(PIXEL_RGB):
        rows[0, channel * 1024 + PIXEL_ROW * 32 + PIXEL_COL] = value
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for number, name in enumerate(TRAIN_NAMES):
        part = slice(number * PER_BATCH, (number + 1) * PER_BATCH)
        records = np.concatenate([train_labels[part, None].astype(np.uint8), rows[part]], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    test_records = np.concatenate(
        [test[1][:, None].astype(np.uint8), to_rows(test[0])], axis=1
    )
    (folder / "test_batch.bin").write_bytes(test_records.tobytes())

    image = data.load_cifar10(tmp_path, validation_size=0).train.images[0]

    np.testing.assert_array_equal(image[PIXEL_ROW, PIXEL_COL], PIXEL_RGB)
    assert np.count_nonzero(image) == 3, "only the marked pixel is non-zero"


def test_auto_source_order(tmp_path):
    python_data, binary_data = make_dataset(seed=1), make_dataset(seed=2)
    write_binary(tmp_path, binary_data)
    archive = to_archive(write_python(tmp_path, python_data))

    assert_dataset_equal(data.load_cifar10(tmp_path, validation_size=0), python_data)
    assert_dataset_equal(
        data.load_cifar10(tmp_path, source="binary", validation_size=0), binary_data
    )

    archive.unlink()
    assert_dataset_equal(data.load_cifar10(tmp_path, validation_size=0), binary_data)


def test_folder_preferred_over_archive(tmp_path):
    folder_data, archive_data = make_dataset(seed=1), make_dataset(seed=2)
    to_archive(write_python(tmp_path, archive_data))
    write_python(tmp_path, folder_data)

    assert_dataset_equal(data.load_cifar10(tmp_path, validation_size=0), folder_data)


@pytest.mark.parametrize("source", ["python", "binary"])
def test_data_dir_is_layout_folder(tmp_path, source):
    dataset = make_dataset()
    folder = write_layout(tmp_path, source, "python2", False, dataset)

    assert_dataset_equal(data.load_cifar10(folder, validation_size=0), dataset)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    argument, from_env, working = (tmp_path / name for name in ("argument", "env", "cwd"))
    datasets = {}
    for seed, root in enumerate((argument, from_env, working / "data")):
        datasets[root] = make_dataset(seed=seed)
        write_binary(root, datasets[root])
    monkeypatch.chdir(working)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(from_env))

    assert data.resolve_data_dir(argument) == argument
    assert_dataset_equal(data.load_cifar10(argument, validation_size=0), datasets[argument])

    assert data.resolve_data_dir() == from_env
    assert_dataset_equal(data.load_cifar10(validation_size=0), datasets[from_env])

    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir() == Path("data")
    assert_dataset_equal(data.load_cifar10(validation_size=0), datasets[working / "data"])


def test_data_dir_without_local_layout_is_tfds_default(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)

    assert data.resolve_data_dir() is None


def test_validation_split_rule(tmp_path):
    dataset = make_dataset()
    write_binary(tmp_path, dataset)
    (train_images, train_labels), _ = dataset
    validation_size, seed = 7, 3

    cifar = data.load_cifar10(tmp_path, validation_size=validation_size, seed=seed)

    # The documented rule, computed here independently of the loader.
    order = np.random.default_rng(seed).permutation(NUM_TRAIN)
    chosen, rest = order[:validation_size], np.sort(order[validation_size:])
    np.testing.assert_array_equal(cifar.validation.images, train_images[chosen])
    np.testing.assert_array_equal(cifar.validation.labels, train_labels[chosen])
    np.testing.assert_array_equal(cifar.train.images, train_images[rest])
    np.testing.assert_array_equal(cifar.train.labels, train_labels[rest])
    assert cifar.train.labels.dtype == cifar.validation.labels.dtype == np.int32


def test_validation_split_disjoint_and_stable(tmp_path):
    write_python(tmp_path, make_dataset())

    first = data.load_cifar10(tmp_path, validation_size=10)
    second = data.load_cifar10(tmp_path, validation_size=10)
    other_seed = data.load_cifar10(tmp_path, validation_size=10, seed=1)

    train_keys = {image.tobytes() for image in first.train.images}
    validation_keys = {image.tobytes() for image in first.validation.images}
    assert len(train_keys) == NUM_TRAIN - 10
    assert len(validation_keys) == 10
    assert not train_keys & validation_keys, "validation images also appear in train"
    np.testing.assert_array_equal(first.validation.images, second.validation.images)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert not np.array_equal(first.validation.images, other_seed.validation.images)


@pytest.mark.parametrize("validation_size, match", [
    (-1, "validation_size must be 0 or more, got -1"),
    (NUM_TRAIN, f"smaller than the {NUM_TRAIN} training images, got {NUM_TRAIN}"),
    (NUM_TRAIN + 5, f"smaller than the {NUM_TRAIN} training images"),
    (2.5, "validation_size must be an int, got 2.5"),
    (True, "validation_size must be an int"),
])
def test_invalid_validation_size(tmp_path, validation_size, match):
    write_binary(tmp_path, make_dataset())

    with pytest.raises(ValueError, match=match):
        data.load_cifar10(tmp_path, validation_size=validation_size)


def test_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'torchvision'; valid sources: "
                       "auto, python, binary, tfds"):
        data.load_cifar10(tmp_path, source="torchvision")


def test_invalid_seed(tmp_path):
    write_binary(tmp_path, make_dataset())

    for seed in (-1, 1.5, None):
        with pytest.raises(ValueError, match=f"seed must be an int of 0 or more, got {seed}"):
            data.load_cifar10(tmp_path, validation_size=1, seed=seed)


def test_missing_data_dir(tmp_path, monkeypatch):
    missing = tmp_path / "does-not-exist"

    with pytest.raises(data.DataError, match="does-not-exist \\(from data_dir\\) does not exist"):
        data.load_cifar10(missing)

    monkeypatch.setenv(data.DATA_DIR_ENV, str(missing))
    with pytest.raises(data.DataError, match="does-not-exist \\(from JAXCLF_DATA_DIR\\) does not"):
        data.load_cifar10()


def test_no_data_anywhere_offline(tmp_path):
    with pytest.raises(data.DataError) as raised:
        data.load_cifar10(tmp_path, validation_size=0)

    message = str(raised.value)
    for place in ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                  "cifar-10-batches-bin", "cifar-10-binary.tar.gz"):
        assert str(tmp_path / place) in message
    assert f"tfds cifar10 in {tmp_path}" in message
    assert "download failed" in message
    for hint in ("JAXCLF_DATA_DIR", "data_dir", "./data", "manual_dir"):
        assert hint in message
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None


@pytest.mark.parametrize("source", ["python", "binary"])
def test_local_source_missing_lists_places(tmp_path, source):
    folder = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}[source]

    with pytest.raises(data.DataError, match="CIFAR-10 was not found") as raised:
        data.load_cifar10(tmp_path, source=source, validation_size=0)

    assert str(tmp_path / folder) in str(raised.value)
    assert "tfds" not in str(raised.value).split("To provide it")[0]


def test_truncated_binary_batch(tmp_path):
    folder = write_binary(tmp_path, make_dataset())
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    actual = PER_BATCH * 3073 - 100

    with pytest.raises(data.DataError, match=f"data_batch_3.bin is {actual} bytes, "
                       "expected a multiple of 3073") as raised:
        data.load_cifar10(tmp_path, validation_size=0)

    assert str(path) in str(raised.value)


def test_binary_batch_cut_at_record(tmp_path):
    folder = write_binary(tmp_path, make_dataset())
    path = folder / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[:-3073])

    with pytest.raises(data.DataError, match=f"data_batch_4.bin contains {PER_BATCH - 1} "
                       f"images, but .*data_batch_1.bin contains {PER_BATCH}"):
        data.load_cifar10(tmp_path, validation_size=0)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_pickle_batch(tmp_path, cut):
    folder = write_python(tmp_path, make_dataset())
    path = folder / "data_batch_2"
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * cut)])
    actual = int(len(content) * cut)

    with pytest.raises(data.DataError, match=f"data_batch_2 \\({actual} bytes\\) is not "
                       "a complete CIFAR-10 pickle") as raised:
        data.load_cifar10(tmp_path, validation_size=0)

    assert "truncated or corrupted" in str(raised.value)


def test_corrupted_pickle_batch(tmp_path):
    folder = write_python(tmp_path, make_dataset())
    (folder / "test_batch").write_bytes(b"\x00not a pickle" * 50)

    with pytest.raises(data.DataError, match="test_batch \\(650 bytes\\) is not a complete"):
        data.load_cifar10(tmp_path, validation_size=0)


def test_pickle_with_code_is_rejected(tmp_path):
    folder = write_python(tmp_path, make_dataset())
    (folder / "data_batch_1").write_bytes(pickle.dumps(os.system))

    with pytest.raises(data.DataError, match="global (posix|nt).system is not allowed in a batch"):
        data.load_cifar10(tmp_path, validation_size=0)


def test_missing_batch_file(tmp_path):
    folder = write_python(tmp_path, make_dataset())
    (folder / "data_batch_5").unlink()

    with pytest.raises(data.DataError, match="data_batch_5 is missing"):
        data.load_cifar10(tmp_path, validation_size=0)


@pytest.mark.parametrize("source", ["python", "binary"])
def test_truncated_archive(tmp_path, source):
    location = write_layout(tmp_path, source, "python2", True, make_dataset())
    content = location.read_bytes()
    location.write_bytes(content[: len(content) // 2])

    with pytest.raises(data.DataError, match="is truncated or corrupted") as raised:
        data.load_cifar10(tmp_path, source=source, validation_size=0)

    message = str(raised.value)
    assert str(location) in message
    assert f"it is {len(content) // 2} bytes, expected 170" in message


def test_archive_missing_batch(tmp_path):
    folder = write_binary(tmp_path, make_dataset())
    (folder / "test_batch.bin").unlink()
    archive = to_archive(folder)

    with pytest.raises(data.DataError, match=f"test_batch.bin missing from {archive}"):
        data.load_cifar10(tmp_path, validation_size=0)


@pytest.mark.parametrize("source, batch, label", [
    ("python", "data_batch_2", 10),
    ("python", "test_batch", -1),
    ("binary", "data_batch_5", 255),
    ("binary", "test_batch", 10),
])
def test_label_out_of_range(tmp_path, source, batch, label):
    if source == "python":
        write_python(tmp_path, make_dataset(), label_override={batch: label})
    else:
        write_binary(tmp_path, make_dataset(), label_override={batch: label})

    with pytest.raises(data.DataError, match=f"{batch}(.bin)? contains label {label} at "
                       "position 0 .*labels are 0..9"):
        data.load_cifar10(tmp_path, source=source, validation_size=0)


# tfds: mocked data, and a manual_dir archive with a wrong checksum.


def test_tfds_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        auto = data.load_cifar10(tmp_path, validation_size=2)
        named = data.load_cifar10(tmp_path, source="tfds", validation_size=0)

    for split, size in ((auto.train, 10), (auto.validation, 2), (auto.test, 12)):
        assert split.images.shape == (size, 32, 32, 3)
        assert split.images.dtype == np.uint8
        assert split.labels.shape == (size,)
        assert split.labels.dtype == np.int32
        assert np.all((split.labels >= 0) & (split.labels <= 9))
    order = np.random.default_rng(0).permutation(12)
    np.testing.assert_array_equal(auto.validation.images, named.train.images[order[:2]])
    np.testing.assert_array_equal(auto.train.images, named.train.images[np.sort(order[2:])])


def test_tfds_manual_archive_checksum(tmp_path):
    archive = to_archive(write_binary(tmp_path, make_dataset()))

    with pytest.raises(data.DataError, match="tfds rejected the cifar10 archive because "
                       "its checksum is wrong") as raised:
        data.load_cifar10(tmp_path, source="tfds")

    assert str(archive) in str(raised.value)
    assert "source='binary'" in str(raised.value)
    assert raised.value.__cause__ is None


def test_tfds_prepares_manual_archive(tmp_path, monkeypatch):
    """tfds prepares cifar10 from a manual_dir archive and yields the same examples."""
    from tensorflow_datasets.core.download import download_manager

    dataset = make_dataset()
    folder = write_binary(tmp_path, dataset)
    (folder / "batches.meta.txt").write_text("\n".join(data.CLASS_NAMES) + "\n")
    archive = to_archive(folder)
    # The tiny archive cannot match the canonical checksum, so skip the check.
    monkeypatch.setattr(
        download_manager.DownloadManager, "_register_or_validate_checksums",
        lambda self, **kwargs: None,
    )

    prepared = data.load_cifar10(tmp_path, source="tfds", validation_size=0)
    archive.unlink()
    reloaded = data.load_cifar10(tmp_path, source="tfds", validation_size=4)

    def examples(split):
        return sorted(zip((image.tobytes() for image in split.images), split.labels.tolist()))

    (train_images, train_labels), (test_images, test_labels) = dataset
    assert prepared.train.images.dtype == np.uint8
    assert prepared.train.labels.dtype == np.int32
    assert examples(prepared.train) == examples(data.Split(train_images, train_labels))
    assert examples(prepared.test) == examples(data.Split(test_images, test_labels))
    assert len(reloaded.train.labels) == NUM_TRAIN - 4
    assert examples(reloaded.test) == examples(prepared.test)


# normalize, flatten and unflatten.


@pytest.mark.parametrize("shape", [(256,), (4, 8, 8, 3), (2, 3, 32, 32, 3)])
def test_normalize_values(shape):
    pixels = (np.arange(np.prod(shape)) % 256).astype(np.uint8).reshape(shape)
    expected = (pixels.astype(np.float64) / 255.0 - 0.5) / 0.5

    for normalized in (data.normalize(pixels), jax.jit(data.normalize)(pixels)):
        assert normalized.dtype == jnp.float32
        assert normalized.shape == shape
        np.testing.assert_allclose(np.asarray(normalized), expected, rtol=0, atol=1e-6)


def test_normalize_endpoints():
    normalized = np.asarray(data.normalize(np.array([0, 255], np.uint8)))

    np.testing.assert_array_equal(normalized, [-1.0, 1.0])


def test_flatten_feature_order():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)

    features = np.asarray(data.flatten(images))

    assert features.shape == (3, 3072)
    assert features.dtype == np.uint8
    for row, col, channel in [(0, 0, 0), (0, 0, 2), (2, 5, 1), (31, 31, 2), (17, 3, 0)]:
        index = (row * 32 + col) * 3 + channel
        assert features[1, index] == images[1, row, col, channel], (row, col, channel)


def test_unflatten_inverts_flatten():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    weights = np.random.default_rng(1).normal(size=(10, 3072)).astype(np.float32)

    np.testing.assert_array_equal(np.asarray(data.unflatten(data.flatten(images))), images)
    np.testing.assert_array_equal(
        np.asarray(data.flatten(data.unflatten(weights))), weights
    )
    assert data.unflatten(np.zeros((2, 12)), image_shape=(2, 2, 3)).shape == (2, 2, 2, 3)


def test_flatten_shape_errors():
    with pytest.raises(ValueError, match="images must have shape .* got shape \\(32, 32, 3\\)"):
        data.flatten(np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="features must have shape \\[N, 3072\\] .* got "
                       "shape \\(2, 3071\\)"):
        data.unflatten(np.zeros((2, 3071)))


def test_public_names_exported():
    for name in ("CLASS_NAMES", "Cifar10", "DataError", "Split", "flatten",
                 "load_cifar10", "normalize", "resolve_data_dir", "unflatten"):
        assert getattr(jaxclf, name) is getattr(data, name)
    assert issubclass(data.DataError, ValueError)
    assert data.CLASS_NAMES == ("airplane", "automobile", "bird", "cat", "deer",
                                "dog", "frog", "horse", "ship", "truck")


# The real copy.


@pytest.fixture(scope="module")
def real_cifar(real_data_dir):
    return {source: data.load_cifar10(real_data_dir, source=source, validation_size=0)
            for source in ("python", "binary")}


@pytest.mark.real_data
def test_real_counts_and_pixels(real_cifar):
    cifar = real_cifar["python"]

    assert cifar.train.images.shape == (50000, 32, 32, 3)
    assert cifar.test.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(cifar.train.labels, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(cifar.test.labels, minlength=10), [1000] * 10)
    for split in (cifar.train, cifar.test):
        assert split.images.min() == 0
        assert split.images.max() == 255


@pytest.mark.real_data
def test_real_python_and_binary_identical(real_cifar):
    assert_dataset_equal(
        real_cifar["binary"],
        ((real_cifar["python"].train.images, real_cifar["python"].train.labels),
         (real_cifar["python"].test.images, real_cifar["python"].test.labels)),
    )


@pytest.mark.real_data
def test_real_validation_split(real_data_dir, real_cifar):
    full = real_cifar["binary"].train

    first = data.load_cifar10(real_data_dir, source="binary")
    second = data.load_cifar10(real_data_dir, source="binary")

    assert len(first.train.labels) == 45000
    assert len(first.validation.labels) == 5000
    order = np.random.default_rng(0).permutation(50000)
    np.testing.assert_array_equal(first.validation.images, full.images[order[:5000]])
    np.testing.assert_array_equal(first.train.images, full.images[np.sort(order[5000:])])
    np.testing.assert_array_equal(first.validation.images, second.validation.images)
    np.testing.assert_array_equal(first.train.labels, second.train.labels)
