"""jaxclf: exact k-nearest neighbours and a linear classifier for CIFAR-10."""
