"""CIFAR-10 loading from local layouts and tfds, validation splits, normalisation.

Images stay uint8 `[N, 32, 32, 3]` (HWC) NumPy arrays on the host and labels
int32 `[N]` until a jitted function needs floats; `normalize` does that step.
"""

import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SOURCES: tuple[str, ...] = ("auto", "python", "binary", "tfds")
DATA_DIR_ENV = "JAXCLF_DATA_DIR"
IMAGE_SHAPE = (32, 32, 3)
NUM_FEATURES = 32 * 32 * 3

_TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
_TEST_BATCH = "test_batch"
_RECORD_BYTES = 1 + NUM_FEATURES


class DataError(ValueError):
    """CIFAR-10 could not be found, or a file of it is invalid."""


class Split(NamedTuple):
    """One split of a data set, as NumPy arrays on the host.

    Attributes:
        images: uint8 `[N, 32, 32, 3]`, rows, columns, then RGB channels.
        labels: int32 `[N]`, class indices in `0..9`.
    """

    images: np.ndarray
    labels: np.ndarray


class Cifar10(NamedTuple):
    """CIFAR-10 split into train, validation and test.

    Attributes:
        train: the training images left after carving out `validation`.
        validation: images taken from the original training set.
        test: the 10,000 test images, untouched.
        class_names: names indexed by label.
    """

    train: Split
    validation: Split
    test: Split
    class_names: tuple[str, ...]


class _Layout(NamedTuple):
    """One local CIFAR-10 layout: its folder and archive names and its reader."""

    source: str
    folder: str
    archive: str
    batch_suffix: str
    decode: Callable[[str, BinaryIO, int], tuple[np.ndarray, np.ndarray]]


def normalize(images: jax.typing.ArrayLike) -> jax.Array:
    """Scale uint8 pixels to float32 `(x / 255 - 0.5) / 0.5`, in `[-1, 1]`.

    Matches `torchvision.transforms.Normalize(0.5, 0.5)` after `ToTensor()`.

    Args:
        images: pixel values in `0..255`, any shape, e.g. `[N, 32, 32, 3]`.

    Returns:
        float32 array of the same shape.
    """
    pixels = jnp.asarray(images).astype(jnp.float32)
    return (pixels / jnp.float32(255.0) - jnp.float32(0.5)) / jnp.float32(0.5)


def flatten(images: jax.typing.ArrayLike) -> jax.Array:
    """Reshape images `[N, 32, 32, 3]` into feature rows `[N, 3072]`.

    The reshape keeps NHWC order, so feature `(row * 32 + col) * 3 + channel`
    contains pixel `(row, col)` of that channel. Any image shape works: the
    trailing three axes become one.

    Args:
        images: `[N, height, width, channels]`, any dtype.

    Returns:
        `[N, height * width * channels]`, same dtype.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape [N, height, width, channels], got shape {images.shape}"
        )
    return images.reshape(images.shape[0], -1)


def unflatten(
    features: jax.typing.ArrayLike, image_shape: tuple[int, int, int] = IMAGE_SHAPE
) -> jax.Array:
    """Reshape feature rows `[N, 3072]` back into images `[N, 32, 32, 3]`.

    The inverse of `flatten`; useful to show weight rows as class templates.

    Args:
        features: `[N, prod(image_shape)]`.
        image_shape: `(height, width, channels)` of one image.

    Returns:
        `[N, *image_shape]`, same dtype.
    """
    features = jnp.asarray(features)
    num_features = int(np.prod(image_shape))
    if features.ndim != 2 or features.shape[1] != num_features:
        raise ValueError(
            f"features must have shape [N, {num_features}] for image_shape "
            f"{tuple(image_shape)}, got shape {features.shape}"
        )
    return features.reshape(features.shape[0], *image_shape)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Pick the folder that contains CIFAR-10.

    The order: the `data_dir` argument, else the environment variable
    `JAXCLF_DATA_DIR`, else `./data` when it contains a local layout (where
    `torchvision.datasets.CIFAR10(root="./data", download=True)` writes),
    else None, which means tfds' default data folder.

    Args:
        data_dir: a folder, or None to look further.

    Returns:
        The folder, or None for tfds' default.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()

    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()

    local = Path("data")
    if any(_find_local(local, layout) is not None for layout in _LAYOUTS):
        return local
    return None


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    validation_size: int = 5000,
    seed: int = 0,
) -> Cifar10:
    """Load CIFAR-10 into host memory and carve a validation split from train.

    Sources, in the order `source="auto"` tries them:

    1. `"python"`: `cifar-10-batches-py/` or `cifar-10-python.tar.gz` in the
       data folder, the pickled batches that torchvision downloads.
    2. `"binary"`: `cifar-10-batches-bin/` or `cifar-10-binary.tar.gz`,
       records of one label byte and 3072 pixel bytes.
    3. `"tfds"`: tfds `cifar10` prepared in the data folder (tfds' default
       folder when there is none). tfds downloads the canonical archive when
       online; offline it takes `cifar-10-binary.tar.gz` from the data folder
       itself (its `manual_dir`) and rejects it unless the checksum matches.

    The data folder is `data_dir`, else `$JAXCLF_DATA_DIR`, else `./data` when
    it contains a local layout, else tfds' default (see `resolve_data_dir`).

    Under `tfds.testing.mock_data(num_examples=n)` with no local layout, the
    tfds source yields n random images for train and n for test (the same
    ones) without touching the network, so `validation_size` must be below n.

    The validation split takes the training examples at
    `numpy.random.default_rng(seed).permutation(num_train)[:validation_size]`,
    in that order; train keeps the others in file order. The same seed and
    files give the same split on every call. tfds stores the examples in its
    own shuffled order, so the tfds source and the local layouts yield the
    same images in a different order, and the same seed picks different
    validation images from them.

    Args:
        data_dir: folder that contains a layout above, or a layout folder
            such as `cifar-10-batches-py/` itself; see above for the default.
        source: one of `"auto"`, `"python"`, `"binary"`, `"tfds"`.
        validation_size: number of training images moved into `validation`;
            0 leaves `validation` empty.
        seed: seed of the permutation that picks the validation images.

    Returns:
        `Cifar10` with uint8 images `[N, 32, 32, 3]` and int32 labels `[N]` as
        NumPy arrays: 50,000 - `validation_size` train, `validation_size`
        validation and 10,000 test images for the real data set.

    Raises:
        ValueError: `source`, `validation_size` or `seed` is invalid.
        DataError: no source contains CIFAR-10, a file is truncated or corrupted,
            a label is outside 0..9, or tfds rejects an archive.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(SOURCES)}")
    if not isinstance(validation_size, (int, np.integer)) or isinstance(validation_size, bool):
        raise ValueError(f"validation_size must be an int, got {validation_size!r}")
    if validation_size < 0:
        raise ValueError(f"validation_size must be 0 or more, got {validation_size}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int of 0 or more, got {seed!r}")

    root = resolve_data_dir(data_dir)
    if root is not None and not root.is_dir():
        origin = "data_dir" if data_dir is not None else DATA_DIR_ENV
        raise DataError(
            f"data folder {root} (from {origin}) does not exist or is not a folder; "
            "fix the path, or create the folder to let tfds download CIFAR-10 into it"
        )

    train, validation, test = _load_splits(root, source, int(validation_size), seed)
    return Cifar10(train=train, validation=validation, test=test, class_names=CLASS_NAMES)


def _validation_indices(num_train: int, validation_size: int, seed: int) -> np.ndarray:
    """Pick the training indices that form the validation split, in split order."""
    if validation_size >= num_train:
        raise ValueError(
            f"validation_size must be smaller than the {num_train} training images, "
            f"got {validation_size}"
        )
    return np.random.default_rng(seed).permutation(num_train)[:validation_size]


def _carve_validation(train: Split, validation_size: int, seed: int) -> tuple[Split, Split]:
    """Move `validation_size` training examples, picked by `seed`, into a new split."""
    validation_indices = _validation_indices(len(train.labels), validation_size, seed)
    keep = np.ones(len(train.labels), dtype=bool)
    keep[validation_indices] = False

    validation = Split(train.images[validation_indices], train.labels[validation_indices])
    if validation_size == 0:
        return train, validation
    return Split(train.images[keep], train.labels[keep]), validation


def _load_splits(
    root: Path | None, source: str, validation_size: int, seed: int
) -> tuple[Split, Split, Split]:
    """Read train, validation and test from the first source that contains them."""
    looked_at = []
    local_root = root if root is not None else Path.cwd() / "data"

    for layout in _LAYOUTS:
        if source not in ("auto", layout.source):
            continue
        location = _find_local(local_root, layout)
        if location is not None:
            return _read_local(location, layout, validation_size, seed)
        looked_at += [local_root / layout.folder, local_root / layout.archive]

    if source in ("auto", "tfds"):
        try:
            train, test = _load_tfds(root)
        except _TfdsUnavailableError as error:
            looked_at.append(str(error))
        else:
            return *_carve_validation(train, validation_size, seed), test

    raise DataError(_not_found_message(looked_at))


def _not_found_message(looked_at: list[str | Path]) -> str:
    places = "\n".join(f"  - {place}" for place in looked_at)
    return (
        "CIFAR-10 was not found. Looked at:\n"
        f"{places}\n"
        "To provide it, do one of these:\n"
        f"  - set {DATA_DIR_ENV} to a folder holding cifar-10-batches-py/, "
        "cifar-10-batches-bin/, cifar-10-python.tar.gz or cifar-10-binary.tar.gz;\n"
        "  - pass that folder as data_dir (--data-dir in the scripts);\n"
        "  - put torchvision's download in ./data: "
        "torchvision.datasets.CIFAR10(root='./data', download=True);\n"
        "  - run once with network access so that tfds downloads and prepares cifar10, "
        "or copy the canonical cifar-10-binary.tar.gz into the data folder and use "
        "source='tfds', which reads it as its manual_dir."
    )


# Local layouts: pickled ("python") and raw ("binary") batches.


def _find_local(data_dir: Path, layout: _Layout) -> Path | None:
    """Return the layout's folder or archive inside `data_dir`, if present.

    `data_dir` may also be the layout's folder itself.
    """
    if data_dir.name == layout.folder and data_dir.is_dir():
        return data_dir
    folder = data_dir / layout.folder
    if folder.is_dir():
        return folder
    archive = data_dir / layout.archive
    if archive.is_file():
        return archive
    return None


def _rows_to_images(rows: np.ndarray, images: np.ndarray) -> None:
    """Copy channel-major rows [n, 3072] into HWC images [n, 32, 32, 3].

    One strided copy per channel ran about 4x faster (NumPy 2.4, 10,000
    images) than copying the whole `[n, 3, 32, 32] -> [n, 32, 32, 3]`
    transpose at once.
    """
    pixels = images.reshape(len(images), 32 * 32, 3)
    for channel in range(3):
        pixels[:, :, channel] = rows[:, channel * 1024 : (channel + 1) * 1024]


class _SplitBuffer:
    """Preallocated train and validation arrays of one split, filled batch by batch.

    Every batch must contain as many images as the first one read, as in the
    canonical release (10,000 each), so the arrays are sized once. Validation
    images go straight to their place, so carving them out copies nothing.
    """

    def __init__(self, batch_names: tuple[str, ...], validation_size: int = 0, seed: int = 0):
        self.batch_names = batch_names
        self.validation_size = validation_size
        self.seed = seed
        self.batch_size = 0
        self.first_name = ""
        self.filled: set[str] = set()

    def _allocate(self, batch_size: int, file_name: str) -> None:
        total = batch_size * len(self.batch_names)
        validation_indices = _validation_indices(total, self.validation_size, self.seed)
        self.is_validation = np.zeros(total, dtype=bool)
        self.is_validation[validation_indices] = True
        self.validation_position = np.empty(total, dtype=np.int64)
        self.validation_position[validation_indices] = np.arange(self.validation_size)
        # Training position of index i: i minus the validation indices below it.
        self.validation_before = np.concatenate([[0], np.cumsum(self.is_validation)])

        num_train = total - self.validation_size
        self.train = Split(
            np.empty((num_train, *IMAGE_SHAPE), np.uint8), np.empty(num_train, np.int32)
        )
        self.validation = Split(
            np.empty((self.validation_size, *IMAGE_SHAPE), np.uint8),
            np.empty(self.validation_size, np.int32),
        )
        self.batch_size = batch_size
        self.first_name = file_name

    def put(self, batch_name: str, file_name: str, rows: np.ndarray, labels: np.ndarray) -> None:
        """Store one batch of channel-major `rows` [n, 3072] and `labels` [n]."""
        count = len(rows)
        if not self.batch_size:
            self._allocate(count, file_name)
        elif count != self.batch_size:
            raise DataError(
                f"{file_name} contains {count} images, but {self.first_name} contains "
                f"{self.batch_size}; every batch of a split has the same number of "
                "images, so one of the files is truncated or corrupted: download "
                "CIFAR-10 again"
            )

        start = self.batch_names.index(batch_name) * count
        to_validation = self.is_validation[start : start + count]
        train_start = start - int(self.validation_before[start])
        if to_validation.any():
            positions = self.validation_position[start : start + count][to_validation]
            images = np.empty((len(positions), *IMAGE_SHAPE), np.uint8)
            _rows_to_images(rows[to_validation], images)
            self.validation.images[positions] = images
            self.validation.labels[positions] = labels[to_validation]
            rows, labels = rows[~to_validation], labels[~to_validation]

        train_end = train_start + len(rows)
        _rows_to_images(rows, self.train.images[train_start:train_end])
        self.train.labels[train_start:train_end] = labels
        self.filled.add(batch_name)

    def finish(self, location: Path) -> tuple[Split, Split]:
        """Return the filled train and validation splits."""
        missing = [name for name in self.batch_names if name not in self.filled]
        if missing:
            raise DataError(f"{', '.join(missing)} missing from {location}; download CIFAR-10 again")
        return self.train, self.validation


def _check_labels(file_name: str, labels: np.ndarray) -> None:
    invalid = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
    if invalid.size:
        index = int(invalid[0])
        raise DataError(
            f"{file_name} contains label {int(labels[index])} at position {index} "
            f"({invalid.size} invalid in all); CIFAR-10 labels are 0..9, so the "
            "file is corrupted or not CIFAR-10"
        )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers and NumPy arrays.

    A batch file then cannot run code when loaded, unlike a bare `pickle.load`.
    """

    # What NumPy arrays need: Python 2 and protocol 2-4 pickles rebuild them
    # with _reconstruct (protocol 2 from Python 3 wraps bytes in
    # _codecs.encode), protocol 5 pickles with _frombuffer.
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a batch")
        return super().find_class(module, name)


# Errors that a truncated or corrupted pickle raises; pickle documents that
# it may raise others besides UnpicklingError.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
    ImportError, IndexError, KeyError, OverflowError, MemoryError,
)


def _decode_python(file_name: str, file: BinaryIO, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled batch: channel-major rows [n, 3072] and labels [n].

    Python 2 pickles load with `encoding="latin1"` into str keys; pickles
    written by Python 3 may carry bytes keys, so both spellings are read.
    """
    try:
        batch = _BatchUnpickler(file, encoding="latin1").load()
    except _PICKLE_ERRORS as error:
        raise DataError(
            f"{file_name} ({size} bytes) is not a complete CIFAR-10 pickle "
            f"({type(error).__name__}: {error}); a batch of 10,000 images is about "
            "31,000,000 bytes. The file is truncated or corrupted: download CIFAR-10 again"
        ) from None

    if not isinstance(batch, dict):
        raise DataError(f"{file_name} contains a {type(batch).__name__}, expected a dict")
    rows = _get_key(batch, "data", file_name)
    labels = _get_key(batch, "labels", file_name)

    rows = np.asarray(rows)
    labels = np.asarray(labels)
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != NUM_FEATURES:
        raise DataError(
            f"{file_name} contains data of dtype {rows.dtype} and shape {rows.shape}, "
            f"expected uint8 [n, {NUM_FEATURES}]"
        )
    if labels.shape != (len(rows),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{file_name} contains {labels.shape} labels of dtype {labels.dtype} "
            f"for {len(rows)} images, expected one integer label per image"
        )
    return rows, labels


def _get_key(batch: dict, key: str, file_name: str):
    for spelling in (key, key.encode()):
        if spelling in batch:
            return batch[spelling]
    raise DataError(f"{file_name} has no {key!r} entry; keys: {sorted(map(str, batch))}")


def _decode_binary(file_name: str, file: BinaryIO, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one raw batch of records (1 label byte, 3072 pixel bytes) into rows and labels."""
    if size == 0 or size % _RECORD_BYTES:
        raise DataError(
            f"{file_name} is {size} bytes, expected a multiple of {_RECORD_BYTES} "
            f"(one label byte and {NUM_FEATURES} pixel bytes per image; a batch of "
            f"10,000 images is {10000 * _RECORD_BYTES} bytes). The file is truncated "
            "or corrupted: download CIFAR-10 again"
        )

    records = np.empty((size // _RECORD_BYTES, _RECORD_BYTES), dtype=np.uint8)
    read = file.readinto(memoryview(records).cast("B"))
    if read != size:
        raise DataError(f"{file_name} ended after {read} of {size} bytes")
    return records[:, 1:], records[:, 0]


_LAYOUTS = (
    _Layout("python", "cifar-10-batches-py", "cifar-10-python.tar.gz", "", _decode_python),
    _Layout("binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz", ".bin", _decode_binary),
)
# Sizes of the canonical archives from https://www.cs.toronto.edu/~kriz/cifar.html.
_ARCHIVE_BYTES = {"cifar-10-python.tar.gz": 170498071, "cifar-10-binary.tar.gz": 170052171}


def _read_local(
    location: Path, layout: _Layout, validation_size: int, seed: int
) -> tuple[Split, Split, Split]:
    """Read train, validation and test from a layout folder or its tar.gz archive."""
    train_names = tuple(name + layout.batch_suffix for name in _TRAIN_BATCHES)
    train = _SplitBuffer(train_names, validation_size, seed)
    test = _SplitBuffer((_TEST_BATCH + layout.batch_suffix,))
    buffers = {name: train for name in train.batch_names} | {test.batch_names[0]: test}

    if location.is_dir():
        members = _folder_members(location, buffers)
    else:
        members = _archive_members(location, layout, buffers)
    try:
        for batch_name, file_name, size, file in members:
            rows, labels = layout.decode(file_name, file, size)
            _check_labels(file_name, labels)
            buffers[batch_name].put(batch_name, file_name, rows, labels)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(_archive_error_message(location, error)) from None

    test_split, _ = test.finish(location)
    return *train.finish(location), test_split


def _folder_members(folder: Path, buffers: dict) -> Iterator[tuple[str, str, int, BinaryIO]]:
    for batch_name in buffers:
        path = folder / batch_name
        if not path.is_file():
            raise DataError(f"{path} is missing; download CIFAR-10 again")
        with open(path, "rb") as file:
            yield batch_name, str(path), path.stat().st_size, file


def _archive_members(
    archive: Path, layout: _Layout, buffers: dict
) -> Iterator[tuple[str, str, int, BinaryIO]]:
    """Yield the batches named in `buffers` from a tar.gz, in archive order, in one pass.

    Each member is read whole here, so that a truncated archive fails with a
    tar or gzip error, not inside the batch decoder.
    """
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            folder, _, batch_name = member.name.rpartition("/")
            if Path(folder).name != layout.folder or batch_name not in buffers:
                continue
            if not member.isfile():
                raise DataError(f"{member.name} in {archive} is not a regular file")
            content = io.BytesIO(tar.extractfile(member).read())
            yield batch_name, f"{archive}:{member.name}", member.size, content


def _archive_error_message(archive: Path, error: Exception) -> str:
    expected = _ARCHIVE_BYTES.get(archive.name)
    expected_text = f", expected {expected} bytes for the canonical archive" if expected else ""
    return (
        f"{archive} is truncated or corrupted ({type(error).__name__}: {error}); "
        f"it is {archive.stat().st_size} bytes{expected_text}. Download it again"
    )


# tfds: prepared data, a download, or the canonical archive in manual_dir.


class _TfdsUnavailableError(Exception):
    """tfds has no prepared cifar10 and could not download it; the message names the folder."""


def _load_tfds(root: Path | None) -> tuple[Split, Split]:
    """Load train and test through tfds `cifar10`, preparing it first if needed.

    With a data folder, tfds prepares the data set into that folder. It also
    uses the folder as its `manual_dir`, so a canonical `cifar-10-binary.tar.gz`
    there replaces the download. tfds verifies the archive's checksum either way.

    NOTE: offline, tfds 4.9.10 retries the download 10 times with backoff,
    which took 3.5 minutes here, before the error that lists the places
    looked at.
    """
    # tfds and TensorFlow load only when this source is used.
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    data_dir = None if root is None else str(root)
    download_config = tfds.download.DownloadConfig(
        manual_dir=data_dir,
    )
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        builder.download_and_prepare(download_config=download_config)
        train, test = (
            _as_numpy_arrays(builder.as_dataset(split=split, as_supervised=True))
            for split in ("train", "test")
        )
    except NonMatchingChecksumError as error:
        first_line = str(error).splitlines()[0].rstrip(":")
        raise DataError(
            f"tfds rejected the cifar10 archive because its checksum is wrong "
            f"({first_line}). The file is corrupted or not the canonical "
            "cifar-10-binary.tar.gz: replace it with the canonical archive, or read "
            "this copy without verification with source='binary'"
        ) from None
    except (OSError, tfds.download.DownloadError) as error:
        place = data_dir or tfds.core.constants.DATA_DIR
        raise _TfdsUnavailableError(
            f"tfds cifar10 in {place}: not prepared, and the download failed "
            f"({type(error).__name__}: {error})"
        ) from None

    return _to_split("tfds cifar10 train", *train), _to_split("tfds cifar10 test", *test)


def _as_numpy_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole `(image, label)` tf.data.Dataset into two NumPy arrays.

    NOTE: `as_dataset(batch_size=-1)` would do this, but tfds 4.9.10 batches by
    `sys.maxsize` when the split sizes are unknown, as under
    `tfds.testing.mock_data` without metadata files, and TensorFlow 2.21 then
    aborts the process. Batching by the dataset's cardinality avoids that.
    """
    import tensorflow_datasets as tfds

    count = int(dataset.cardinality())
    if count <= 0:  # Unknown or empty: read in chunks.
        chunks = list(tfds.as_numpy(dataset.batch(10_000)))
        if not chunks:
            return np.empty((0, *IMAGE_SHAPE), np.uint8), np.empty(0, np.int32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
    return next(iter(tfds.as_numpy(dataset.batch(count))))


def _to_split(name: str, images: np.ndarray, labels: np.ndarray) -> Split:
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels).astype(np.int32)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{name} has images of shape {images.shape}, expected [N, 32, 32, 3]")
    _check_labels(name, labels)
    return Split(images, labels)
