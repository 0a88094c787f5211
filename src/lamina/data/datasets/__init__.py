"""Dataset loaders: digits (scikit-learn), MNIST / Fashion-MNIST / KMNIST / EMNIST (IDX),
CIFAR-10 / CIFAR-100 / STL-10 (binary), SVHN (MATLAB files), IMDB reviews (text).

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
from lamina.data.datasets.cifar100 import load_cifar100, load_cifar100_classes, read_cifar100_bin
from lamina.data.datasets.digits import load_digits
from lamina.data.datasets.fetch import ChecksumError
from lamina.data.datasets.idx import load_fashion_mnist, load_mnist, read_idx, read_idx_file
from lamina.data.datasets.imdb import load_imdb
from lamina.data.datasets.mnist_variants import EMNIST_CLASSES, KMNIST_CLASSES, load_emnist, load_kmnist
from lamina.data.datasets.stl10 import STL10_CLASSES, load_stl10, read_stl10_images
from lamina.data.datasets.svhn import load_svhn, read_svhn_mat

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")

__all__ = [
    "CIFAR10_CLASSES",
    "ChecksumError",
    "EMNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "KMNIST_CLASSES",
    "STL10_CLASSES",
    "extract_cifar10_archive",
    "load_cifar10",
    "load_cifar100",
    "load_cifar100_classes",
    "load_digits",
    "load_emnist",
    "load_fashion_mnist",
    "load_imdb",
    "load_kmnist",
    "load_mnist",
    "load_stl10",
    "load_svhn",
    "read_cifar100_bin",
    "read_cifar10_bin",
    "read_idx",
    "read_idx_file",
    "read_stl10_images",
    "read_svhn_mat",
]
