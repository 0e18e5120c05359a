"""jaxclf: exact k-nearest neighbours and a linear classifier for CIFAR-10."""

from jaxclf.data import (
    CLASS_NAMES,
    Cifar10,
    DataError,
    Split,
    flatten,
    load_cifar10,
    normalize,
    resolve_data_dir,
    unflatten,
)
