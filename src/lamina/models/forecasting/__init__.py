"""Forecasters of multivariate time series: TCN, N-BEATS, DLinear and PatchTST.

Every model reads windows x of shape (batch, input_length, channels) and returns forecasts
(batch, horizon, channels) (:mod:`lamina.data.timeseries` makes such windows). N-BEATS, DLinear
and PatchTST treat the channels independently (one univariate model shared by every channel);
the TCN mixes them in its convolutions.

* :class:`TCN` (Bai, Kolter & Koltun, 2018): residual blocks of dilated causal convolutions
  (:class:`TemporalBlock`), the dilation doubling from block to block, and a Dense head on the
  features of the last step.
* :class:`NBEATS` (Oreshkin et al., 2020): stacks of fully connected blocks
  (:class:`NBeatsBlock`) with doubly residual backcasts and forecasts; generic blocks, or the
  interpretable trend (polynomial basis) and seasonality (Fourier basis) ones.
* :class:`DLinear` (Zeng et al., 2023): a moving-average decomposition into trend and remainder,
  each mapped to the horizon by one linear layer over time.
* :class:`PatchTST` (Nie et al., 2023): each channel cut into overlapping patches that are the
  tokens of a Transformer encoder, a flatten head, reversible instance normalisation.
* :class:`TemporalFusionTransformer` (Lim et al., 2021): static, past and known-future inputs,
  variable selection, an LSTM encoder-decoder and interpretable causal attention, giving
  quantile forecasts (batch, horizon, n_quantiles) and the weights that explain them; its
  blocks :class:`GatedResidualNetwork`, :class:`VariableSelectionNetwork`,
  :class:`InterpretableMultiHeadAttention` and :class:`StaticCovariateEncoder`.
* :class:`ChronosModel` (Ansari et al., 2024): a T5 language model over mean-scaled values put in
  uniform bins (:class:`MeanScaleUniformBins`), forecasting univariate series (batch, time) by
  sampled trajectories (:class:`ChronosGPT2Model`: its decoder-only variant); the augmentations
  :func:`tsmixup` and :func:`kernel_synth`.
* :class:`Autoformer` (Wu et al., 2021): series decomposition blocks (:func:`series_decomposition`)
  and Auto-Correlation (:func:`auto_correlation`, FFT autocorrelation and time-delay aggregation)
  in an encoder-decoder with progressive decomposition.
* :class:`Informer` (Zhou et al., 2021): ProbSparse self-attention (:func:`prob_sparse_attention`,
  the query sparsity :func:`query_sparsity`), self-attention distilling and a generative decoder
  with start tokens.
* :class:`NHiTS` (Challu et al., 2023): multi-rate input pooling and hierarchical interpolation
  (:func:`linear_interpolation_matrix`) of the forecasts of stacked residual blocks.
* :class:`TSMixer` (Chen et al., 2023): time-mixing and feature-mixing MLPs and a temporal
  projection.
* :class:`TimesNet` (Wu et al., 2023): the series folded into 2-D by its main FFT periods
  (:func:`fft_periods`, :func:`fold_periods`, :func:`unfold_periods`) and mixed by 2-D Inception
  convolutions (:class:`TimesBlock`, :class:`InceptionBlock2D`); forecasts or class logits.
* :class:`ITransformer` (Liu et al., 2024): each variate's window one token of a Transformer
  encoder that attends across the variates.
* :class:`DeepAR` (Salinas et al., 2020): an autoregressive LSTM giving the parameters of a
  Gaussian, Student-t or negative binomial likelihood per step (:func:`gaussian_log_prob`,
  :func:`student_t_log_prob`, :func:`negative_binomial_log_prob`, the item scale
  :func:`item_scale`), trained by the negative log-likelihood and forecasting by ancestral
  sample paths (:class:`DeepARForecast`).

The builders :func:`tcn`, :func:`nbeats`, :func:`dlinear`, :func:`patchtst`, :func:`autoformer`,
:func:`informer`, :func:`nhits`, :func:`tsmixer`, :func:`tft`, :func:`timesnet` and :func:`itransformer`
are registered in the ``"forecasting"`` group of :func:`lamina.models.list_models`.
"""

from lamina.models.forecasting.autoformer import (
    Autoformer,
    auto_correlation,
    autoformer,
    series_decomposition,
    time_delay_correlation,
)
from lamina.models.forecasting.chronos import (
    ChronosForecast,
    ChronosGPT2Model,
    ChronosModel,
    MeanScaleUniformBins,
    kernel_synth,
    sample_gaussian_process,
    tsmixup,
)
from lamina.models.forecasting.deepar import DeepAR, DeepARForecast
from lamina.models.forecasting.deepar_likelihoods import (
    gaussian_log_prob,
    item_scale,
    negative_binomial_log_prob,
    student_t_log_prob,
)
from lamina.models.forecasting.dlinear import DLinear, dlinear, moving_average_matrix
from lamina.models.forecasting.informer import Informer, full_attention, informer, prob_sparse_attention, query_sparsity
from lamina.models.forecasting.itransformer import ITransformer, itransformer
from lamina.models.forecasting.nbeats import NBEATS, NBeatsBlock, fourier_basis, nbeats, polynomial_basis
from lamina.models.forecasting.nhits import NHiTS, linear_interpolation_matrix, nhits
from lamina.models.forecasting.patchtst import PatchTST, patchtst
from lamina.models.forecasting.tcn import TCN, TemporalBlock, tcn, tcn_receptive_field
from lamina.models.forecasting.tft import (
    GatedResidualNetwork,
    InterpretableMultiHeadAttention,
    StaticCovariateEncoder,
    TemporalFusionTransformer,
    VariableSelectionNetwork,
    tft,
)
from lamina.models.forecasting.timesnet import (
    InceptionBlock2D,
    TimesBlock,
    TimesNet,
    fft_periods,
    fold_periods,
    timesnet,
    unfold_periods,
)
from lamina.models.forecasting.tsmixer import TSMixer, tsmixer

__all__ = [
    "NBEATS", "TCN", "DLinear", "NBeatsBlock", "PatchTST", "TemporalBlock", "dlinear", "fourier_basis",
    "moving_average_matrix", "nbeats", "patchtst", "polynomial_basis", "tcn", "tcn_receptive_field",
    "GatedResidualNetwork", "InterpretableMultiHeadAttention", "StaticCovariateEncoder", "TemporalFusionTransformer",
    "VariableSelectionNetwork", "ChronosForecast", "ChronosGPT2Model", "ChronosModel", "MeanScaleUniformBins",
    "kernel_synth", "sample_gaussian_process", "tsmixup",
    "Autoformer", "Informer", "NHiTS", "TSMixer", "auto_correlation", "full_attention", "linear_interpolation_matrix",
    "prob_sparse_attention", "query_sparsity", "series_decomposition", "time_delay_correlation",
    "autoformer", "informer", "nhits", "tft", "tsmixer",
    "ITransformer", "InceptionBlock2D", "TimesBlock", "TimesNet", "fft_periods", "fold_periods", "unfold_periods",
    "itransformer", "timesnet",
    "DeepAR", "DeepARForecast", "gaussian_log_prob", "item_scale", "negative_binomial_log_prob", "student_t_log_prob",
]
