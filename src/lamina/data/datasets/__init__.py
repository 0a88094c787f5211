"""Dataset loaders: digits (scikit-learn), MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary).

Datasets are never stored in the repository: loaders read them from ``data_dir``,
``$LAMINA_DATA``, ``~/.cache/lamina/<name>`` or a system copy, downloading (with checksum
verification) only when allowed; see :mod:`lamina.data.datasets.fetch`.
"""

from lamina.data.datasets.cifar import (
    CIFAR10_CLASSES,
    extract_cifar10_archive,
    load_cifar10,
    read_cifar10_bin,
)
from lamina.data.datasets.digits import load_digits
from lamina.data.datasets.fetch import ChecksumError
from lamina.data.datasets.idx import load_fashion_mnist, load_mnist, read_idx, read_idx_file

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")

__all__ = [
    "CIFAR10_CLASSES",
    "ChecksumError",
    "FASHION_MNIST_CLASSES",
    "extract_cifar10_archive",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar10_bin",
    "read_idx",
    "read_idx_file",
]
