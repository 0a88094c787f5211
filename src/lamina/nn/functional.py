"""``lamina.nn.functional``, the counterpart of ``torch.nn.functional``: every op of
:mod:`lamina.functional` and PyTorch's functional forms of lamina's layers
(:mod:`lamina.nn.layer_functions`: ``linear``, ``dropout``, ``batch_norm``, ``layer_norm``,
``embedding``, ...). ``import lamina.nn.functional as F`` gives a PyTorch user the names they
know; lamina is channels-last, so PyTorch's channel axis 1 is the last axis here.

Where :mod:`lamina.functional` has a loss under PyTorch's name with lamina's own reductions
(``nll_loss``, ``binary_cross_entropy``, ``kl_div``, ...: ``'none'`` and ``'sum'`` per
sample), the name here is PyTorch's version (:mod:`lamina.functional.torch_losses`: per
value, with ``weight`` and ``ignore_index`` where PyTorch has them).
"""

from lamina.functional import *  # noqa: F403
from lamina.functional import __all__ as _op_names
from lamina.functional.rearrange import reduce  # einops' reduce (lamina.functional.reduce is a module)
from lamina.functional.torch_losses import (  # noqa: F401  (PyTorch's reductions for these names)
    binary_cross_entropy,
    gaussian_nll_loss,
    hinge_embedding_loss,
    kl_div,
    margin_ranking_loss,
    nll_loss,
    poisson_nll_loss,
    soft_margin_loss,
)
from lamina.nn.attention_forward import multi_head_attention_forward
from lamina.nn.channel_shuffle import channel_shuffle as native_channel_shuffle
from lamina.nn.embedding_bag import embedding_bag
from lamina.nn.layer_functions import *  # noqa: F403
from lamina.nn.layer_functions import __all__ as _layer_names

__all__ = [*_op_names, *_layer_names, "reduce", "embedding_bag", "multi_head_attention_forward",
           "native_channel_shuffle"]
