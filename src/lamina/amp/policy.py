"""Which ops autocast runs in which precision (sets ``autocast_policy`` on their classes).

lamina follows the policy of torch's *CUDA* autocast, the one that matters on a GPU:

- ``"lower"`` (run in the autocast dtype): the products that gain from half precision,
  matmul/linear, einsum, bilinear, the convolutions, attention, the recurrent cells, PReLU.
- ``"float32"`` (cast up): ops whose range or accumulation suffers in half precision,
  softmax/log_softmax, exp/log and relatives (softplus, erfinv too), sums/means/norms and
  cumulative reductions, the normalisation layers, the losses, the distance and linear-algebra ops.
- ``"promote"`` (the widest input type): joining ops (concatenate, stack, where).
- every other op runs in whatever its inputs are; NumPy's arithmetic already promotes
  mixed float16/float32 operands to float32.

torch's CPU autocast differs: it keeps softmax, log_softmax, exp, log, sum and the
normalisations out of its float32 list (they run in the input's dtype).
"""

from __future__ import annotations

import importlib

_POLICY: dict[str, dict[str, tuple[str, ...]]] = {
    "lower": {
        "lamina.functional.arithmetic": ("MatMul",),
        "lamina.functional.einsum": ("Einsum",),
        "lamina.functional.conv": ("Conv2d",),
        "lamina.functional.conv3d": ("Conv3d",),
        "lamina.functional.conv_dilated": ("DilatedConv2d",),
        "lamina.functional.conv_transpose": ("ConvTranspose2d",),
        "lamina.functional.attention": ("ScaledDotProductAttention",),
        "lamina.functional.attention_blockwise": ("BlockwiseAttention",),
        "lamina.functional.recurrent_cells": ("SimpleRNNFunction", "GRUFunction", "LSTMFunction"),
        "lamina.functional.conv_lstm": ("ConvLSTMFunction",),
        "lamina.nn.dense": ("LinearFunction",),
        "lamina.nn.bilinear": ("BilinearFunction",),
        "lamina.nn.activation": ("PReLUFunction",),
    },
    "float32": {
        "lamina.functional.activation": ("Softmax", "LogSoftmax"),
        "lamina.functional.elementwise": ("Exp", "Log"),
        "lamina.functional.math_more": ("Log1p", "Expm1", "Tan", "Reciprocal", "Rsqrt", "LogBase"),
        "lamina.functional.math_parity": ("Sinh", "Cosh", "Exp2", "LogAddExp"),
        "lamina.functional.smooth_activation": ("Softplus",),
        "lamina.functional.special": ("Erfinv",),
        "lamina.functional.arithmetic": ("Pow", "PowScalar"),
        "lamina.functional.reduce": ("Sum", "Mean"),
        "lamina.functional.reduce_more": ("LogSumExp", "Prod", "Std", "Norm", "CumSum", "CumProd"),
        "lamina.functional.scan_parity": ("LogCumSumExp",),
        "lamina.functional.segment": ("SegmentSoftmax",),
        "lamina.functional.similarity": ("Cdist",),
        "lamina.functional.linalg": ("Inv", "Det", "SignLogAbsDet", "Solve", "SolveTriangular", "Cholesky",
                                     "MatrixExp"),
        "lamina.functional.linalg_decomp": ("Eigh", "Eigvalsh", "Svd", "Svdvals", "Qr", "Pinv"),
        "lamina.functional.loss": ("BinaryCrossEntropyWithLogits", "SoftmaxCrossEntropy",
                                   "SparseSoftmaxCrossEntropy"),
        "lamina.functional.losses_more": ("_PointwiseLoss", "MultiMargin", "NegativeLogLikelihood"),
        "lamina.functional.losses_focal": ("BinaryFocal", "CategoricalFocal"),
        "lamina.functional.losses_metric": ("TripletMargin", "CosineEmbedding", "MarginRanking", "Contrastive"),
        "lamina.functional.losses_extra": ("GaussianNLL", "MultilabelMargin"),
        "lamina.functional.losses_ctc": ("ConnectionistTemporalClassification",),
        "lamina.functional.losses_distill": ("Distillation",),
        "lamina.nn.normalization": ("BatchNormFunction", "LocalResponseNormFunction"),
        "lamina.nn.sample_norm": ("LayerNormFunction", "GroupNormFunction"),
    },
    "promote": {
        "lamina.functional.shape": ("Concat", "Stack"),
        "lamina.functional.elementwise": ("Where",),
    },
}


def _install() -> None:
    for policy, modules in _POLICY.items():
        for module_name, class_names in modules.items():
            module = importlib.import_module(module_name)
            for name in class_names:
                getattr(module, name).autocast_policy = policy


def ops_with_policy(policy: str) -> list[type]:
    """The Function classes autocast treats with ``policy`` (``"lower"``, ``"float32"``,
    ``"promote"``), subclasses included."""
    if policy not in _POLICY:
        raise ValueError(f"ops_with_policy: unknown policy {policy!r}; expected one of {sorted(_POLICY)}")
    from lamina.autograd import Function

    found, stack = [], [Function]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("autocast_policy", cls.autocast_policy) == policy and cls is not Function:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


_install()
