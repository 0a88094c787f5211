"""FID and KID as epoch metrics of the :class:`~lamina.train.Trainer`, for models that generate
samples (a generator mapping codes to images, an autoencoder, a conditional model).

The model's outputs of each batch are the generated samples; a feature model (a Module run by
:func:`lamina.analysis.extract_features` in evaluation mode, or any callable returning (N, D)
features; none: the outputs are the features themselves) turns them into feature vectors that
the running :class:`lamina.analysis.FID` or :class:`lamina.analysis.KID` accumulates. The real
samples are either given once as ``real_features`` (kept across epochs) or, without them, taken
from the labels of every batch, as in ``Trainer.evaluate((codes, real_images))``.

``update`` returns NaN (neither score is a mean over batches, and one batch rarely holds enough
samples); ``result()`` gives the score over the whole epoch, ``||mu_r - mu_g||^2 +
Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` for FID and the mean unbiased polynomial-kernel MMD^2 over
random subsets for KID (whose standard deviation over the subsets is kept in ``std``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.analysis import FID, KID, extract_features
from lamina.autograd import Tensor
from lamina.nn import Module
from lamina.train.epoch_metric import EpochMetric

__all__ = ["FIDMetric", "KIDMetric"]


class _FeatureScore(EpochMetric):
    """The shared part: features of the generated (and, without fixed ones, the real) samples
    fed to a running score."""

    def __init__(self, running, feature_model: Module | Callable | None, real_features, layer, batch_size: int):
        self.running, self.feature_model = running, feature_model
        self.layer, self.batch_size = layer, batch_size
        self.fixed_real = real_features is not None
        if self.fixed_real:
            self.running.update(real=_as_array(real_features))

    def features(self, samples) -> np.ndarray:
        """The (N, D) features of a batch of samples under the feature model."""
        if self.feature_model is None:
            features = _as_array(samples)
        elif isinstance(self.feature_model, Module):
            features = extract_features(self.feature_model, _as_array(samples), self.layer, self.batch_size)
        else:
            features = _as_array(self.feature_model(samples))
        return features.reshape(len(features), -1)

    def reset(self) -> None:
        self.running.reset()

    def update(self, scores, y_true) -> float:
        real = None if self.fixed_real else self.features(y_true)
        self.running.update(real=real, fake=self.features(scores))
        return float("nan")


class FIDMetric(_FeatureScore):
    """FID of the model's outputs against ``real_features`` (N, D) (or, without them, against the
    labels of the epoch's batches), the outputs passed through ``feature_model`` (its ``layer``,
    as :func:`lamina.analysis.extract_features` takes it). Equals :func:`lamina.analysis.fid` of
    the same features."""

    name = "fid"

    def __init__(self, feature_model: Module | Callable | None = None, real_features=None,
                 layer: int | str | Module | None = None, batch_size: int = 256, name: str = "fid"):
        super().__init__(FID(reset_real=real_features is None), feature_model, real_features, layer, batch_size)
        self.name = name

    def result(self) -> float:
        return self.running.compute()


class KIDMetric(_FeatureScore):
    """KID (the mean over subsets) of the model's outputs against ``real_features`` (or the
    labels), as :class:`FIDMetric`; ``kid_options`` are those of :func:`lamina.analysis.kid`
    (``subsets``, ``subset_size``, ``degree``, ``gamma``, ``coef``, ``seed``). After
    :meth:`result`, ``std`` holds the standard deviation over the subsets."""

    name = "kid"

    def __init__(self, feature_model: Module | Callable | None = None, real_features=None,
                 layer: int | str | Module | None = None, batch_size: int = 256, name: str = "kid",
                 **kid_options):
        super().__init__(KID(**kid_options, reset_real=real_features is None), feature_model, real_features, layer,
                         batch_size)
        self.name, self.std = name, float("nan")

    def result(self) -> float:
        mean, self.std = self.running.compute()
        return mean


def _as_array(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))
