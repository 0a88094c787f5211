"""Differentiable ops on tensors: each a Function with its backward, and a snake_case wrapper."""

from lamina.functional import tensor_methods as _tensor_methods
from lamina.functional.activation import (
    elu,
    leaky_relu,
    log_softmax,
    relu,
    selu,
    sigmoid,
    softmax,
    tanh,
)
from lamina.functional.activation_extra import (
    celu,
    hardshrink,
    hardtanh,
    log_sigmoid,
    softmin,
    softshrink,
    softsign,
    tanhshrink,
    threshold,
)
from lamina.functional.adaptive_pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool1d_with_indices,
    adaptive_max_pool2d,
    adaptive_max_pool2d_with_indices,
)
from lamina.functional.adaptive_pool3d import (
    adaptive_avg_pool3d,
    adaptive_max_pool3d,
    adaptive_max_pool3d_with_indices,
)
from lamina.functional.arithmetic import add, div, matmul, mul, neg, power, sub
from lamina.functional.attention import scaled_dot_product_attention
from lamina.functional.attention_masks import alibi_bias, alibi_slopes, sliding_window_mask
from lamina.functional.audio import (
    amplitude_to_db,
    dct_matrix,
    hz_to_mel,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
    mfcc,
    mfcc_from_mel,
)
from lamina.functional.audio_effects import deemphasis, fade, preemphasis
from lamina.functional.audio_synthesis import (
    griffinlim,
    inverse_mel_scale,
    mu_law_decoding,
    mu_law_encoding,
    resample,
    resample_kernel,
)
from lamina.functional.bessel import i0, i0e, i1, i1e
from lamina.functional.bsplines import b_spline_basis, extended_grid, gaussian_rbf_basis
from lamina.functional.capsules import capsule_margin_loss, dynamic_routing, squash
from lamina.functional.conv import conv2d
from lamina.functional.conv3d import conv3d
from lamina.functional.conv_lstm import conv_lstm
from lamina.functional.conv_transpose import conv_transpose2d
from lamina.functional.conv_transpose_nd import conv_transpose1d, conv_transpose3d
from lamina.functional.crf import crf_log_partition, crf_marginals, crf_path_score
from lamina.functional.crf_decode import crf_nbest_paths
from lamina.functional.deform_conv import deform_conv2d
from lamina.functional.delta_rule import delta_rule_chunkwise, delta_rule_recurrent
from lamina.functional.depth_losses import (
    berhu_loss,
    depth_to_normals,
    edge_aware_smoothness,
    gradient_matching_loss,
    scale_and_shift,
    scale_invariant_log_loss,
    scale_shift_invariant_loss,
)
from lamina.functional.deq import DEQStats, deq_fixed_point, jacobian_penalty
from lamina.functional.domain_adaptation import coral_loss, gradient_reversal, mmd_loss
from lamina.functional.efficient_attention import (
    linformer_attention,
    lsh_attention,
    lsh_buckets,
    nystrom_attention,
    nystrom_pinv,
)
from lamina.functional.einsum import einsum
from lamina.functional.elementwise import abs, clip, exp, log, maximum, minimum, sqrt, where
from lamina.functional.entmoid import entmoid15
from lamina.functional.evidential import (
    DirichletUncertainty,
    dirichlet_kl_uniform,
    dirichlet_uncertainty,
    edl_digamma_loss,
    edl_log_loss,
    edl_mse_loss,
    evidential_regression_loss,
    nig_nll,
    nig_regularizer,
    nig_uncertainty,
)
from lamina.functional.fake_quantize import (
    fake_quantize_learnable_per_tensor,
    fake_quantize_per_channel,
    fake_quantize_per_tensor,
)
from lamina.functional.fixed_point import (
    FixedPointError,
    FixedPointResult,
    anderson_acceleration,
    broyden,
    fixed_point_iteration,
    solve_fixed_point,
)
from lamina.functional.flex import flex_attention
from lamina.functional.flex_masks import BlockMask, and_masks, create_block_mask, noop_mask, or_masks
from lamina.functional.fold import fold, unfold
from lamina.functional.fractional_pool import fractional_max_pool2d, fractional_max_pool2d_with_indices
from lamina.functional.fractional_pool3d import fractional_max_pool3d, fractional_max_pool3d_with_indices
from lamina.functional.gan_losses import (
    gan_loss,
    hinge_d_loss,
    hinge_g_loss,
    logistic_d_loss,
    logistic_g_loss,
    r1_penalty,
)
from lamina.functional.gated_linear_attention import (
    gated_linear_attention_chunkwise,
    gated_linear_attention_recurrent,
)
from lamina.functional.glu import glu
from lamina.functional.grid_sample import affine_grid, grid_sample
from lamina.functional.group_conv import group_action, group_conv2d, group_filter_bank, group_pool
from lamina.functional.hmm import hmm_log_likelihood
from lamina.functional.image_quality import (
    MS_SSIM_WEIGHTS,
    gaussian_window,
    gram_matrix,
    ms_ssim,
    psnr,
    ssim,
    ssim_loss,
    total_variation,
)
from lamina.functional.indexing import (
    argmax,
    argmin,
    chunk,
    flip,
    gather,
    index_select,
    masked_fill,
    repeat_interleave,
    roll,
    scatter_add,
    sort,
    split,
    tile,
    topk,
)
from lamina.functional.indexing_parity import (
    argsort,
    bincount,
    bucketize,
    histc,
    index_add,
    index_copy,
    index_fill,
    masked_scatter,
    masked_select,
    msort,
    nonzero,
    scatter,
    scatter_reduce,
    searchsorted,
    take,
    take_along_dim,
    unique,
    unique_consecutive,
)
from lamina.functional.interpolate import interpolate
from lamina.functional.invariance_penalties import irm_penalty, vrex_penalty
from lamina.functional.keypoints import keypoint_mse_loss, soft_argmax_2d
from lamina.functional.linalg_structure import diag_embed, diagonal, trace, tril, triu
from lamina.functional.linear_attention import (
    FEATURE_MAPS,
    favor_features,
    linear_attention,
    orthogonal_random_features,
    performer_attention,
)
from lamina.functional.linear_cross_entropy import linear_cross_entropy
from lamina.functional.linear_scan import complex_linear_scan, linear_scan, log_linear_scan
from lamina.functional.loss import (
    binary_cross_entropy,
    categorical_cross_entropy,
    mean_squared_error,
)
from lamina.functional.losses_ctc import ctc_loss
from lamina.functional.losses_distill import distillation_loss
from lamina.functional.losses_embedding import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    circle_loss,
    lifted_structure_loss,
    multi_similarity_loss,
    npair_loss,
    proxy_anchor_loss,
    proxy_nca_loss,
    semi_hard_triplet_loss,
    soft_triple_loss,
    supervised_contrastive_loss,
)
from lamina.functional.losses_extra import (
    cosine_similarity_loss,
    gaussian_nll_loss,
    hinge_embedding_loss,
    kl_div,
    log_cosh,
    mean_absolute_percentage_error,
    mean_squared_logarithmic_error,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    poisson,
    poisson_nll_loss,
    soft_margin_loss,
    squared_hinge,
)
from lamina.functional.losses_feature_distill import (
    attention_map,
    attention_transfer_loss,
    crd_loss,
    dkd_loss,
    dkd_terms,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    similarity_preserving_loss,
)
from lamina.functional.losses_focal import binary_focal_loss, categorical_focal_loss
from lamina.functional.losses_iwae import effective_sample_size, iwae_bound
from lamina.functional.losses_listwise import (
    approx_ndcg_loss,
    listmle_loss,
    listnet_loss,
    neural_ndcg_loss,
    neural_sort,
    sinkhorn_scaling,
    softmax_loss,
)
from lamina.functional.losses_lm_distill import TOKEN_DIVERGENCES, generalized_jsd, token_divergence
from lamina.functional.losses_mdn import mdn_log_prob, mdn_loss, mdn_mean, mdn_mode, mdn_sample
from lamina.functional.losses_metric import (
    contrastive_loss,
    cosine_embedding_loss,
    margin_ranking_loss,
    triplet_margin_loss,
)
from lamina.functional.losses_more import (
    hinge,
    huber,
    kl_divergence,
    mean_absolute_error,
    multiclass_hinge,
    nll_loss,
    smooth_l1,
)
from lamina.functional.losses_noisy import (
    backward_corrected_loss,
    bootstrap_loss,
    estimate_transition_matrix,
    forward_corrected_loss,
    generalized_cross_entropy,
    symmetric_cross_entropy,
    taylor_cross_entropy,
)
from lamina.functional.losses_preference import (
    DPO_LOSS_TYPES,
    dpo_loss,
    kto_loss,
    orpo_loss,
    reward_model_loss,
    sequence_log_probs,
    simpo_loss,
)
from lamina.functional.losses_prototypical import class_prototypes, prototypical_logits, prototypical_loss
from lamina.functional.losses_quantile import pinball_loss
from lamina.functional.losses_ranking import (
    LAMBDA_WEIGHTINGS,
    PADDING_LABEL,
    lambda_loss,
    pointwise_rmse,
    rank_hinge_loss,
    ranknet_loss,
)
from lamina.functional.losses_relative import relative_lp_loss
from lamina.functional.losses_rnnt import rnnt_loss
from lamina.functional.losses_segmentation import (
    dice_loss,
    focal_tversky_loss,
    jaccard_loss,
    lovasz_softmax_loss,
    tversky_loss,
)
from lamina.functional.losses_sentence import (
    angle_loss,
    cos_sim,
    cosent_loss,
    cosine_similarity_mse_loss,
    dot_score,
    matryoshka_loss,
    multiple_negatives_ranking_loss,
    multiple_negatives_symmetric_ranking_loss,
    online_contrastive_loss,
    pairwise_angle_sim,
    pairwise_cos_sim,
    sentence_contrastive_loss,
    sentence_triplet_loss,
)
from lamina.functional.losses_siamese import (
    byol_loss,
    moco_logits,
    moco_v2_loss,
    moco_v3_loss,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
)
from lamina.functional.losses_siglip import (
    SIGLIP_BIAS_INIT,
    SIGLIP_LOG_TEMPERATURE_INIT,
    siglip_block_loss,
    siglip_logits,
    siglip_loss,
)
from lamina.functional.losses_speaker import ge2e_loss, ge2e_similarity
from lamina.functional.losses_ssl import barlow_twins_loss, info_nce_loss, nt_xent_loss, vicreg_loss
from lamina.functional.losses_vae import gaussian_kl, reparameterize, vae_loss
from lamina.functional.lp_pool import lp_pool1d, lp_pool2d, lp_pool3d
from lamina.functional.math_more import (
    atan2,
    cos,
    expm1,
    floor,
    log1p,
    log2,
    log10,
    reciprocal,
    round,
    rsqrt,
    sign,
    sin,
    square,
    tan,
)
from lamina.functional.math_parity import (
    acos,
    acosh,
    addcdiv,
    addcmul,
    allclose,
    asin,
    asinh,
    atan,
    atanh,
    ceil,
    clamp,
    copysign,
    cosh,
    exp2,
    fmod,
    frac,
    heaviside,
    hypot,
    isclose,
    lerp,
    logaddexp,
    logaddexp2,
    remainder,
    sinc,
    sinh,
    trunc,
)
from lamina.functional.miners import distance_matrix, mine_pairs, mine_triplets
from lamina.functional.ms_deform_attn import deformable_reference_points, ms_deform_attn
from lamina.functional.ode import odeint
from lamina.functional.ode_adjoint import odeint_adjoint
from lamina.functional.optimal_transport import emd, emd2, ot_cost_matrix, sliced_wasserstein, wasserstein_1d
from lamina.functional.optimal_transport_entropic import (
    barycenter,
    entropic_gromov_wasserstein,
    sinkhorn,
    sinkhorn2,
    sinkhorn_balance,
    sinkhorn_divergence,
    sinkhorn_potentials,
    unbalanced_sinkhorn,
)
from lamina.functional.padding import pad2d, pixel_shuffle, pixel_unshuffle
from lamina.functional.padding_nd import pad1d, pad3d
from lamina.functional.paged_attention import paged_attention
from lamina.functional.parity_extra import (
    atleast_1d,
    atleast_2d,
    atleast_3d,
    combinations,
    histogram,
    index_reduce,
    isin,
    nan_to_num,
)
from lamina.functional.penalties import gradient_penalty
from lamina.functional.perturbed import PerturbedOptimizer
from lamina.functional.point_cloud import (
    ball_query,
    farthest_point_sample,
    group_points,
    interpolate_features,
    inverse_distance_weights,
    knn,
    three_interpolate,
    three_nn,
)
from lamina.functional.pool3d import avg_pool3d, global_avg_pool3d, max_pool3d
from lamina.functional.pooling import avg_pool2d, global_avg_pool2d, max_pool2d
from lamina.functional.projections import project_box, project_l1_ball, project_simplex
from lamina.functional.qp_layer import qp_solve
from lamina.functional.recurrent import gru, lstm, simple_rnn
from lamina.functional.reduce import max, mean, min, sum, var
from lamina.functional.reduce_more import cumprod, cumsum, logsumexp, norm, prod, std
from lamina.functional.resize import crop2d, upsample2d, zero_pad2d
from lamina.functional.retention import (
    retention_chunkwise,
    retention_decay_mask,
    retention_parallel,
    retention_recurrent,
)
from lamina.functional.rms_norm import rms_norm
from lamina.functional.rotary import (
    ROPE_TYPES,
    check_rope_scaling,
    rope_depends_on_length,
    rotary_angles,
    rotary_embedding,
    rotary_frequencies,
    rotary_parameters,
)
from lamina.functional.rrelu import rrelu
from lamina.functional.rwkv import rwkv_wkv_parallel, rwkv_wkv_recurrent
from lamina.functional.scan_parity import (
    cummax,
    cummin,
    cumulative_trapezoid,
    diff,
    logcumsumexp,
    trapezoid,
)
from lamina.functional.score_matching import (
    contrastive_divergence_loss,
    denoising_score_matching_loss,
    nce_loss,
    score_matching_loss,
    sliced_score_matching_loss,
)
from lamina.functional.segment import segment_max, segment_mean, segment_softmax, segment_sum, take_rows
from lamina.functional.selective_scan import selective_scan
from lamina.functional.semi_supervised import (
    consistency_loss,
    fixmatch_unlabeled_loss,
    flexmatch_class_thresholds,
    linear_rampup,
    sharpen,
    sigmoid_rampup,
)
from lamina.functional.separation_losses import permutation_invariant_loss, sdr, si_sdr, si_sdr_loss, si_snr, snr
from lamina.functional.shape import (
    broadcast_to,
    concat,
    expand_dims,
    flatten,
    getitem,
    pad,
    reshape,
    squeeze,
    stack,
    swapaxes,
    transpose,
)
from lamina.functional.shape_parity import (
    block_diag,
    cartesian_prod,
    cross,
    diag,
    diagflat,
    kron,
    meshgrid,
    movedim,
    narrow,
    outer,
    rot90,
    tensordot,
    tril_indices,
    triu_indices,
    unflatten,
    vander,
)
from lamina.functional.similarity import cdist, cosine_similarity, normalize, pairwise_distance
from lamina.functional.smooth_activation import gelu, hard_sigmoid, hard_swish, mish, silu, softplus
from lamina.functional.soft_sort import soft_rank, soft_sort, soft_topk
from lamina.functional.softcapped_attention import softcapped_attention
from lamina.functional.sorting_networks import soft_sort_matrix, sorting_network
from lamina.functional.sparse_attention_patterns import (
    bigbird_mask,
    block_sparse_attention,
    expand_block_mask,
    longformer_mask,
)
from lamina.functional.sparse_softmax import entmax15, sparsemax
from lamina.functional.special import (
    digamma,
    erf,
    erfc,
    erfinv,
    expit,
    gammainc,
    lgamma,
    log_ndtr,
    logit,
    ndtr,
    ndtri,
    polygamma,
    xlogy,
)
from lamina.functional.spectral import (
    bartlett_window,
    blackman_window,
    hamming_window,
    hann_window,
    istft,
    kaiser_window,
    magnitude,
    spectrogram,
    stft,
)
from lamina.functional.spiking_losses import ce_count_loss, ce_rate_loss, mse_count_loss
from lamina.functional.splatting import covariance_to_conic, rasterize_gaussians_2d
from lamina.functional.splines import rational_quadratic_spline
from lamina.functional.ssd import ssd, ssd_reference
from lamina.functional.stats_parity import (
    all,
    amax,
    amin,
    aminmax,
    any,
    corrcoef,
    count_nonzero,
    cov,
    dist,
    kthvalue,
    median,
    mode,
    nanmean,
    nanmedian,
    nanquantile,
    nansum,
    quantile,
    renorm,
    std_mean,
    var_mean,
)
from lamina.functional.stft_losses import (
    log_stft_magnitude_loss,
    multi_resolution_stft_loss,
    spectral_convergence_loss,
    stft_magnitude,
)
from lamina.functional.surrogates import (
    SURROGATES,
    Surrogate,
    spike_atan,
    spike_fast_sigmoid,
    spike_sigmoid,
    spike_straight_through,
    spike_triangular,
    surrogate,
)
from lamina.functional.survival import (
    COX_TIES,
    breslow_baseline_hazard,
    concordance_index,
    cox_ph_loss,
    survival_function,
)
from lamina.functional.token_merging import bipartite_soft_matching, merge_wavg, proportional_attention
from lamina.functional.torch_losses import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    l1_loss,
    mse_loss,
    multi_margin_loss,
    smooth_l1_loss,
    triplet_margin_with_distance_loss,
)
from lamina.functional.torch_names import (
    avg_pool1d,
    conv1d,
    conv_tbc,
    gumbel_softmax,
    hardsigmoid,
    hardswish,
    logsigmoid,
    max_pool1d,
    one_hot,
    pdist,
    prelu,
    relu6,
    upsample,
    upsample_bilinear,
    upsample_nearest,
)
from lamina.functional.unpool import max_pool2d_with_indices, max_unpool2d
from lamina.functional.unpool_nd import (
    max_pool1d_with_indices,
    max_pool3d_with_indices,
    max_unpool1d,
    max_unpool3d,
)
from lamina.functional.vector_quantize import (
    VQResult,
    codebook_perplexity,
    finite_scalar_quantize,
    fsq_codes_to_indices,
    fsq_indices_to_codes,
    nearest_codes,
    straight_through,
    vector_quantize,
)
from lamina.functional.vocoder_losses import (
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mel_spectrogram_l1_loss,
    vocoder_log_mel_spectrogram,
)

_tensor_methods.install()

# einops' ``reduce`` is not bound here, where the name is the submodule lamina.functional.reduce:
# lamina.reduce, lamina.nn.functional.reduce and lamina.functional.rearrange.reduce give it.
from lamina.functional.rearrange import pack, rearrange, repeat, unpack  # noqa: E402

__all__ = [
    "abs", "add", "avg_pool2d", "binary_cross_entropy", "broadcast_to", "categorical_cross_entropy", "clip",
    "concat", "conv2d", "conv_transpose2d", "crop2d", "div", "elu", "exp", "expand_dims", "flatten", "gelu",
    "getitem", "gru", "global_avg_pool2d", "hard_sigmoid", "hard_swish", "hinge", "huber", "kl_divergence",
    "leaky_relu", "log", "log_softmax", "lstm", "matmul", "max", "max_pool2d", "maximum", "mean",
    "mean_absolute_error", "mean_squared_error", "min", "minimum", "mish", "mul", "multiclass_hinge", "neg",
    "nll_loss", "pad", "power", "relu", "reshape", "scaled_dot_product_attention", "selu", "sigmoid", "silu",
    "softcapped_attention",
    "simple_rnn", "smooth_l1", "softmax", "softplus", "sqrt", "squeeze", "stack", "sub", "sum", "swapaxes",
    "tanh", "transpose", "upsample2d", "var", "where", "zero_pad2d", "binary_focal_loss", "categorical_focal_loss",
    "argmax", "argmin", "chunk", "flip", "gather", "index_select", "masked_fill", "repeat_interleave", "roll",
    "scatter_add", "sort", "split", "tile", "topk", "ctc_loss", "contrastive_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "triplet_margin_loss", "einsum", "atan2", "cos", "expm1", "floor", "log1p", "log2",
    "log10", "reciprocal", "round", "rsqrt", "sign", "sin", "square", "tan", "cumprod", "cumsum", "logsumexp",
    "norm", "prod", "std", "cdist", "cosine_similarity", "normalize", "pairwise_distance",
    "affine_grid", "grid_sample", "gaussian_kl", "reparameterize", "vae_loss", "gradient_penalty", "gan_loss",
    "logistic_d_loss", "logistic_g_loss", "r1_penalty", "hinge_d_loss", "hinge_g_loss",
    "celu", "hardshrink", "hardtanh", "log_sigmoid", "softmin", "softshrink", "softsign", "tanhshrink", "threshold",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d", "pad2d",
    "pixel_shuffle", "pixel_unshuffle", "fold", "unfold", "max_pool2d_with_indices", "max_unpool2d", "interpolate",
    "fractional_max_pool2d", "fractional_max_pool2d_with_indices", "fractional_max_pool3d",
    "fractional_max_pool3d_with_indices", "max_pool1d_with_indices",
    "max_pool3d_with_indices", "max_unpool1d", "max_unpool3d",
    "cosine_similarity_loss", "gaussian_nll_loss", "hinge_embedding_loss", "kl_div", "log_cosh",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "multilabel_margin_loss",
    "multilabel_soft_margin_loss", "poisson", "poisson_nll_loss", "soft_margin_loss", "squared_hinge",
    "distillation_loss", "DPO_LOSS_TYPES", "dpo_loss", "kto_loss", "orpo_loss", "reward_model_loss",
    "sequence_log_probs", "simpo_loss", "conv3d", "max_pool3d", "avg_pool3d", "global_avg_pool3d",
    "conv_lstm", "rotary_angles", "rotary_embedding", "rotary_frequencies", "rotary_parameters", "check_rope_scaling",
    "rope_depends_on_length", "ROPE_TYPES", "alibi_bias", "alibi_slopes",
    "sliding_window_mask",
    "digamma", "erf", "erfc", "erfinv", "expit", "gammainc", "i0", "i0e", "i1", "i1e", "lgamma", "log_ndtr", "logit",
    "ndtr", "ndtri",
    "polygamma", "xlogy",
    "diag_embed", "diagonal", "trace", "tril", "triu",
    "segment_max", "segment_mean", "segment_softmax", "segment_sum", "take_rows",
    "barlow_twins_loss", "info_nce_loss", "nt_xent_loss", "vicreg_loss",
    "fake_quantize_learnable_per_tensor", "fake_quantize_per_channel", "fake_quantize_per_tensor",
    "dice_loss", "focal_tversky_loss", "jaccard_loss", "lovasz_softmax_loss", "tversky_loss",
    "amplitude_to_db", "bartlett_window", "blackman_window", "dct_matrix", "hamming_window", "hann_window",
    "hz_to_mel", "istft", "kaiser_window", "magnitude",
    "mel_filterbank", "mel_spectrogram", "mel_to_hz", "mfcc", "mfcc_from_mel", "spectrogram", "stft",
    "argsort", "bincount", "bucketize", "histc", "index_add", "index_copy", "index_fill", "masked_scatter",
    "masked_select", "msort", "nonzero", "scatter", "scatter_reduce", "searchsorted", "take", "take_along_dim",
    "unique", "unique_consecutive",
    "block_diag", "cartesian_prod", "cross", "diag", "diagflat", "kron", "meshgrid", "movedim", "narrow", "outer",
    "rot90", "tensordot", "tril_indices", "triu_indices", "unflatten", "vander",
    "conv_transpose1d", "conv_transpose3d", "glu", "lp_pool1d", "lp_pool2d", "lp_pool3d", "pad1d", "pad3d",
    "rms_norm", "rrelu", "selective_scan", "ssd", "ssd_reference",
    "project_box", "project_l1_ball", "project_simplex", "qp_solve",
]
__all__ += [  # PyTorch-named math, statistics and scans
    "acos", "acosh", "addcdiv", "addcmul", "allclose", "asin", "asinh", "atan", "atanh", "ceil", "clamp", "copysign",
    "cosh", "exp2", "fmod", "frac", "heaviside", "hypot", "isclose", "lerp", "logaddexp", "logaddexp2", "remainder",
    "sinc", "sinh", "trunc", "all", "amax", "amin", "aminmax", "any", "corrcoef", "count_nonzero", "cov", "dist",
    "kthvalue", "median", "mode", "nanmean", "nanmedian", "nanquantile", "nansum", "quantile", "renorm", "std_mean",
    "var_mean", "cumulative_trapezoid", "cummax", "cummin", "diff", "logcumsumexp", "trapezoid",
    "adaptive_avg_pool3d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
]
__all__ += [  # PyTorch-named losses (torch_losses)
    "binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "l1_loss", "mse_loss", "multi_margin_loss",
    "smooth_l1_loss", "triplet_margin_with_distance_loss",
]
__all__ += ["linear_cross_entropy"]  # the LM head's cross-entropy in chunks of rows (linear_cross_entropy)
__all__ += [  # PyTorch-named activations, encodings, 1-D convolution and pooling (torch_names)
    "avg_pool1d", "conv1d", "conv_tbc", "gumbel_softmax", "hardsigmoid", "hardswish", "logsigmoid", "max_pool1d",
    "one_hot", "pdist", "prelu", "relu6", "upsample", "upsample_bilinear", "upsample_nearest",
]
__all__ += ["pack", "rearrange", "repeat", "unpack"]  # einops-style axis algebra (rearrange)
__all__ += ["relative_lp_loss"]  # operator learning (losses_relative)
__all__ += ["pinball_loss"]  # quantile regression (losses_quantile)
__all__ += ["class_prototypes", "prototypical_logits", "prototypical_loss"]  # few-shot (losses_prototypical)
__all__ += [  # more PyTorch-named ops (parity_extra)
    "atleast_1d", "atleast_2d", "atleast_3d", "combinations", "histogram", "index_reduce", "isin", "nan_to_num",
]

__all__ += ["odeint", "odeint_adjoint"]  # neural ODEs (ode, ode_adjoint)
__all__ += [  # fixed-point solvers and deep equilibrium layers (fixed_point, deq)
    "DEQStats", "FixedPointError", "FixedPointResult", "anderson_acceleration", "broyden", "deq_fixed_point",
    "fixed_point_iteration", "jacobian_penalty", "solve_fixed_point",
]
__all__ += [  # flex attention under PyTorch's names (flex, flex_masks)
    "BlockMask", "and_masks", "create_block_mask", "flex_attention", "noop_mask", "or_masks",
]
__all__ += ["crf_log_partition", "crf_marginals", "crf_nbest_paths", "crf_path_score"]  # linear-chain CRF (crf)
__all__ += ["entmax15", "entmoid15", "sparsemax"]  # sparse probability maps (sparse_softmax, entmoid)
__all__ += [  # point clouds: sampling, grouping, interpolation (point_cloud)
    "ball_query", "farthest_point_sample", "group_points", "interpolate_features", "inverse_distance_weights", "knn",
    "three_interpolate", "three_nn",
]
__all__ += ["rnnt_loss"]  # RNN-Transducer loss (losses_rnnt)
__all__ += [  # spike functions with surrogate gradients and spike-record losses (surrogates, spiking_losses)
    "SURROGATES", "Surrogate", "ce_count_loss", "ce_rate_loss", "mse_count_loss", "spike_atan", "spike_fast_sigmoid",
    "spike_sigmoid", "spike_straight_through", "spike_triangular", "surrogate",
]
__all__ += ["coral_loss", "gradient_reversal", "mmd_loss"]  # domain adaptation (domain_adaptation)
__all__ += [  # semi-supervised learning (semi_supervised)
    "consistency_loss", "fixmatch_unlabeled_loss", "flexmatch_class_thresholds", "linear_rampup", "sharpen",
    "sigmoid_rampup",
]
__all__ += [  # vector quantisation and finite scalar quantisation (vector_quantize)
    "VQResult", "codebook_perplexity", "finite_scalar_quantize", "fsq_codes_to_indices", "fsq_indices_to_codes",
    "nearest_codes", "straight_through", "vector_quantize",
]
__all__ += [  # linear-time sequence mixing (linear_attention, retention, rwkv)
    "FEATURE_MAPS", "favor_features", "linear_attention", "orthogonal_random_features", "performer_attention",
    "retention_chunkwise", "retention_decay_mask", "retention_parallel", "retention_recurrent",
    "rwkv_wkv_parallel", "rwkv_wkv_recurrent",
]
__all__ += ["delta_rule_chunkwise", "delta_rule_recurrent", "gated_linear_attention_chunkwise",
            "gated_linear_attention_recurrent"]  # DeltaNet, Gated DeltaNet, GLA (delta_rule, gated_linear_attention)
__all__ += ["capsule_margin_loss", "dynamic_routing", "squash"]  # capsule networks (capsules)
__all__ += ["MS_SSIM_WEIGHTS", "gaussian_window", "gram_matrix", "ms_ssim", "psnr", "ssim", "ssim_loss",
            "total_variation"]  # image quality, style and restoration losses (image_quality)
__all__ += [  # audio synthesis and effects (audio_synthesis, audio_effects)
    "deemphasis", "fade", "griffinlim", "inverse_mel_scale", "mu_law_decoding", "mu_law_encoding", "preemphasis",
    "resample", "resample_kernel",
]
__all__ += [  # sentence-embedding losses and similarities (losses_sentence)
    "angle_loss", "cos_sim", "cosent_loss", "cosine_similarity_mse_loss", "dot_score", "matryoshka_loss",
    "multiple_negatives_ranking_loss", "multiple_negatives_symmetric_ranking_loss", "online_contrastive_loss",
    "pairwise_angle_sim", "pairwise_cos_sim", "sentence_contrastive_loss", "sentence_triplet_loss",
]
__all__ += [  # deep metric learning: proxy, pair and batch triplet losses, miners (losses_embedding, miners)
    "batch_all_triplet_loss", "batch_hard_triplet_loss", "circle_loss", "distance_matrix", "lifted_structure_loss",
    "mine_pairs", "mine_triplets", "multi_similarity_loss", "npair_loss", "proxy_anchor_loss", "proxy_nca_loss",
    "semi_hard_triplet_loss", "soft_triple_loss", "supervised_contrastive_loss",
]
__all__ += ["mdn_log_prob", "mdn_loss", "mdn_mean", "mdn_mode", "mdn_sample"]  # mixture density networks
__all__ += [  # survival analysis (survival)
    "COX_TIES", "breslow_baseline_hazard", "concordance_index", "cox_ph_loss", "survival_function",
]
__all__ += [  # learning to rank (losses_ranking, losses_listwise)
    "LAMBDA_WEIGHTINGS", "PADDING_LABEL", "approx_ndcg_loss", "lambda_loss", "listmle_loss", "listnet_loss",
    "neural_ndcg_loss", "neural_sort", "pointwise_rmse", "rank_hinge_loss", "ranknet_loss", "sinkhorn_scaling",
    "softmax_loss",
]
__all__ += ["b_spline_basis", "extended_grid", "gaussian_rbf_basis"]  # KAN bases (bsplines)
__all__ += ["rational_quadratic_spline"]  # neural spline flows' monotone spline (splines)
__all__ += ["ge2e_loss", "ge2e_similarity"]  # speaker verification (losses_speaker)
__all__ += ["keypoint_mse_loss", "soft_argmax_2d"]  # heatmap pose regression (keypoints)
__all__ += ["attention_map", "attention_transfer_loss", "crd_loss", "dkd_loss", "dkd_terms", "hint_loss", "nst_loss",
            "pkt_loss", "rkd_angle_loss", "rkd_distance_loss", "rkd_loss",
            "similarity_preserving_loss"]  # feature and relational distillation (losses_feature_distill)
__all__ += [  # optimal transport (optimal_transport, optimal_transport_entropic)
    "barycenter", "emd", "emd2", "entropic_gromov_wasserstein", "ot_cost_matrix", "sinkhorn", "sinkhorn2",
    "sinkhorn_balance", "sinkhorn_divergence", "sinkhorn_potentials", "sliced_wasserstein", "unbalanced_sinkhorn",
    "wasserstein_1d",
]
__all__ += ["byol_loss", "moco_logits", "moco_v2_loss", "moco_v3_loss", "simsiam_loss", "sinkhorn_knopp",
            "swav_loss"]  # momentum-encoder and clustering self-supervision (losses_siamese)
__all__ += ["contrastive_divergence_loss", "denoising_score_matching_loss", "nce_loss", "score_matching_loss",
            "sliced_score_matching_loss"]  # energy-based models and score matching (score_matching)
__all__ += ["backward_corrected_loss", "bootstrap_loss", "estimate_transition_matrix", "forward_corrected_loss",
            "generalized_cross_entropy", "symmetric_cross_entropy",
            "taylor_cross_entropy"]  # noisy-label losses (losses_noisy)
__all__ += ["irm_penalty", "vrex_penalty"]  # environment invariance (invariance_penalties)
__all__ += ["SIGLIP_BIAS_INIT", "SIGLIP_LOG_TEMPERATURE_INIT", "siglip_block_loss", "siglip_logits",
            "siglip_loss"]  # SigLIP's sigmoid image-text loss (losses_siglip)
__all__ += ["complex_linear_scan", "linear_scan", "log_linear_scan"]  # first-order linear recurrences (linear_scan)
__all__ += ["hmm_log_likelihood"]  # hidden Markov model forward algorithm (hmm)
__all__ += ["group_action", "group_conv2d", "group_filter_bank", "group_pool"]  # p4 / p4m group convolutions
__all__ += [  # monocular depth losses and surface normals (depth_losses)
    "berhu_loss", "depth_to_normals", "edge_aware_smoothness", "gradient_matching_loss", "scale_and_shift",
    "scale_invariant_log_loss", "scale_shift_invariant_loss",
]
__all__ += [  # source separation metrics, PIT and STFT losses (separation_losses, stft_losses)
    "log_stft_magnitude_loss", "multi_resolution_stft_loss", "permutation_invariant_loss", "sdr", "si_sdr",
    "si_sdr_loss", "si_snr", "snr", "spectral_convergence_loss", "stft_magnitude",
]
__all__ += ["deform_conv2d"]  # deformable convolution, DCNv1/v2 (deform_conv)
__all__ += ["deformable_reference_points", "ms_deform_attn"]  # multi-scale deformable attention
__all__ += ["feature_matching_loss", "lsgan_discriminator_loss", "lsgan_generator_loss", "mel_spectrogram_l1_loss",
            "vocoder_log_mel_spectrogram"]  # GAN vocoder losses (vocoder_losses)
__all__ += ["paged_attention"]  # decode-step attention over a paged key/value cache (paged_attention)
__all__ += ["PerturbedOptimizer", "soft_rank", "soft_sort", "soft_sort_matrix", "soft_topk",  # soft sorting
            "sorting_network"]  # and ranking (soft_sort, sorting_networks, perturbed)
__all__ += ["bipartite_soft_matching", "merge_wavg", "proportional_attention"]  # token merging, ToMe (token_merging)
__all__ += ["DirichletUncertainty", "dirichlet_kl_uniform", "dirichlet_uncertainty", "edl_digamma_loss",
            "edl_log_loss", "edl_mse_loss", "evidential_regression_loss", "nig_nll", "nig_regularizer",
            "nig_uncertainty"]  # evidential deep learning (evidential)
__all__ += ["covariance_to_conic", "rasterize_gaussians_2d"]  # 2-D Gaussian splatting (splatting)
__all__ += ["TOKEN_DIVERGENCES", "generalized_jsd",
            "token_divergence"]  # token-level divergences for LM distillation (losses_lm_distill)
__all__ += ["bigbird_mask", "block_sparse_attention", "expand_block_mask",
            "longformer_mask"]  # Longformer / BigBird patterns (sparse_attention_patterns)
__all__ += ["linformer_attention", "lsh_attention", "lsh_buckets", "nystrom_attention",
            "nystrom_pinv"]  # Linformer, Nystromformer, Reformer LSH attention (efficient_attention)
__all__ += ["effective_sample_size", "iwae_bound"]  # importance-weighted bounds (losses_iwae)
