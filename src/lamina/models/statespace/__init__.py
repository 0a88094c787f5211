"""Classical probabilistic sequence and mixture models.

* :class:`HiddenMarkovModel`: a discrete-state HMM with categorical or diagonal-Gaussian
  emissions; forward algorithm, forward-backward posteriors, Viterbi, Baum-Welch (``fit``) and
  sampling (hmmlearn's CategoricalHMM / GaussianHMM). Its log-likelihood as differentiable ops
  is :func:`lamina.functional.hmm_log_likelihood`, so an HMM can sit on top of a network.
* :class:`KalmanFilter`: the linear-Gaussian state-space model; filter, Rauch-Tung-Striebel
  smoother, log-likelihood, prediction, sampling and EM for the noise covariances (pykalman's
  and filterpy's);
  :func:`kalman_log_likelihood` gives the log-likelihood as differentiable ops for learning
  F, H, Q, R, x0 or P0 by gradient.
* :class:`ParticleFilter`: the bootstrap particle filter on any transition and likelihood
  callables, with :func:`multinomial_resample`, :func:`stratified_resample` and
  :func:`systematic_resample` under an effective-sample-size threshold.
* :class:`GaussianMixture`: Gaussian mixtures fitted by EM from k-means++ (full, tied, diag,
  spherical covariances), with ``predict``, ``predict_proba``, ``score_samples``, ``bic``,
  ``aic`` and ``sample`` (scikit-learn's GaussianMixture).
"""

from lamina.models.statespace.gmm import GaussianMixture
from lamina.models.statespace.hmm import HiddenMarkovModel
from lamina.models.statespace.kalman import KalmanFilter, kalman_log_likelihood
from lamina.models.statespace.particle import (
    ParticleFilter,
    ParticleFilterResult,
    multinomial_resample,
    stratified_resample,
    systematic_resample,
)

__all__ = [
    "GaussianMixture", "HiddenMarkovModel", "KalmanFilter", "ParticleFilter", "ParticleFilterResult",
    "kalman_log_likelihood", "multinomial_resample", "stratified_resample", "systematic_resample",
]
