"""Mechanistic interpretability of transformer language models.

* :func:`run_with_cache`, :func:`run_with_hooks`, :class:`ActivationCache`,
  :func:`transformer_parts`: read or replace any sub-module's output by its dotted path; the
  residual stream per block, split into embeddings, attention and MLP branches.
* :func:`logit_lens`: each layer's residual stream read through the final norm and the unembedding
  (through trained affine translators, :class:`TunedLens`, for the tuned lens).
* :func:`activation_patching`, :func:`attribution_patching`, :func:`patching_grid`,
  :func:`logit_difference`: which activations carry the difference between a clean and a corrupted input.
* :func:`enable_head_hooks`, :func:`head_contributions`: per-head outputs of the attention layers
  (cached, patched with ``heads=`` or ``component='head'``) and what each head adds to the residual stream.
* :func:`train_probe`, :func:`probe_layers`: linear probes, per layer.
* :func:`feature_l0`, :func:`explained_variance`, :func:`loss_recovered`: scores of a sparse
  autoencoder (the model is :class:`lamina.models.SparseAutoencoder`, its training
  :func:`lamina.train.train_sparse_autoencoder`).
"""

from lamina.analysis.interpretability.activation_cache import (
    ActivationCache,
    TransformerParts,
    run_with_cache,
    run_with_hooks,
    transformer_parts,
)
from lamina.analysis.interpretability.heads import (
    disable_head_hooks,
    enable_head_hooks,
    head_contributions,
    head_hook_names,
)
from lamina.analysis.interpretability.lens import LogitLens, TunedLens, logit_lens
from lamina.analysis.interpretability.patching import (
    COMPONENTS,
    PatchingResult,
    activation_patching,
    attribution_patching,
    logit_difference,
    patching_grid,
)
from lamina.analysis.interpretability.probes import LinearProbe, ProbeScore, probe_layers, train_probe
from lamina.analysis.interpretability.sae_metrics import (
    SpliceScores,
    explained_variance,
    feature_l0,
    loss_recovered,
    next_token_loss,
)

__all__ = [
    "COMPONENTS", "ActivationCache", "LinearProbe", "LogitLens", "PatchingResult", "ProbeScore", "SpliceScores",
    "TransformerParts", "TunedLens", "activation_patching", "attribution_patching", "disable_head_hooks",
    "enable_head_hooks", "explained_variance", "feature_l0", "head_contributions", "head_hook_names",
    "logit_difference", "logit_lens", "loss_recovered", "next_token_loss", "patching_grid", "probe_layers",
    "run_with_cache", "run_with_hooks", "train_probe", "transformer_parts",
]
