"""Time-series classification: random-convolution transforms and deep classifiers.

* :class:`Rocket` (Dempster et al., 2020) and :class:`MiniRocket` (Dempster et al., 2021):
  features from random (ROCKET) or fixed (MiniRocket) dilated convolution kernels, NumPy
  transforms with ``fit`` / ``transform`` on (N, L) or (N, L, C) series; :class:`MultiRocket`
  (Tan et al., 2022) adds first differences and three more pooling operators;
  :class:`RocketClassifier` adds the papers' ridge classifier with cross-validated penalty.
* :class:`FCN`, :class:`ResNet1D` (Wang et al., 2017) and :class:`InceptionTime` (Fawaz et
  al., 2020): networks on (batch, steps, channels) series giving class logits, with class
  activation maps.

Data: :mod:`lamina.data.ucr` (UCR/UEA ``.ts`` and ``.tsv`` files, z-normalisation) and
:mod:`lamina.data.tsc_synthetic` (cylinder-bell-funnel, waveforms).
"""

from lamina.models.tsc.classifier import RocketClassifier
from lamina.models.tsc.deep import (
    FCN,
    ConvBlock1D,
    InceptionModule1D,
    InceptionTime,
    InceptionTimeEnsemble,
    ResNet1D,
    ResNetBlock1D,
    inception_kernel_sizes,
)
from lamina.models.tsc.minirocket import MINIROCKET_KERNEL_INDICES, MiniRocket, minirocket_dilations, minirocket_kernels
from lamina.models.tsc.multirocket import MultiRocket
from lamina.models.tsc.rocket import Rocket

__all__ = [
    "FCN", "MINIROCKET_KERNEL_INDICES", "ConvBlock1D", "InceptionModule1D", "InceptionTime", "InceptionTimeEnsemble",
    "MiniRocket", "MultiRocket", "ResNet1D", "ResNetBlock1D", "Rocket", "RocketClassifier", "inception_kernel_sizes",
    "minirocket_dilations", "minirocket_kernels",
]
