"""Keras's dataset loaders: ``(x_train, y_train), (x_test, y_test) = mnist.load_data()``.

Each module's ``load_data(path=None)`` reads lamina's copy of the dataset
(:mod:`lamina.data.datasets`: files searched in ``path``, ``$LAMINA_DATA``,
``~/.cache/lamina/<name>`` or a system copy, SHA-256 checked, downloaded when missing) and
returns Keras's arrays: uint8 images without a channel axis for greyscale
(mnist, fashion_mnist: ``(N, 28, 28)``), uint8 ``(N, 32, 32, 3)`` for cifar10, and uint8
labels, ``(N,)`` or, for cifar10, ``(N, 1)``. :mod:`digits` (scikit-learn's 8x8 digits,
split at a fixed seed) needs no files.
"""

from lamina.keras.datasets import cifar10, digits, fashion_mnist, mnist

__all__ = ["cifar10", "digits", "fashion_mnist", "mnist"]
