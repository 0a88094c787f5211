"""Hugging Face's wav2vec 2.0 weights: the table from lamina's state-dict keys of
:class:`~lamina.models.wav2vec2.Wav2Vec2ForCTC` and
:class:`~lamina.models.wav2vec2_pretraining.Wav2Vec2ForPreTraining` to HF's, and the loader."""

from __future__ import annotations

from collections.abc import Mapping

from lamina.models.hf_weights import HFWeight, copied, linear, load_hf_state_dict, read_state_dict
from lamina.models.wav2vec2 import Wav2Vec2ForCTC
from lamina.models.wav2vec2_pretraining import Wav2Vec2ForPreTraining
from lamina.nn.module import Module

__all__ = ["hf_wav2vec2_table", "load_hf_wav2vec2_state_dict"]

_POS = "wav2vec2.encoder.pos_conv_embed.conv."
_WEIGHT_NORM_NAMES = {"g": ("weight_g", "parametrizations.weight.original0"),
                      "v": ("weight_v", "parametrizations.weight.original1")}


def _conv(key: str) -> HFWeight:
    """A PyTorch ``Conv1d`` weight (out, in, k), lamina's Conv1D weight (out, k, in) transposed."""
    return HFWeight((key,), lambda w: w.transpose(0, 2, 1))


def hf_wav2vec2_table(model: Module, parametrizations: bool = False) -> dict[str, HFWeight]:
    """The state-dict key of a :class:`Wav2Vec2ForCTC` or
    :class:`lamina.models.wav2vec2_pretraining.Wav2Vec2ForPreTraining` -> Hugging Face's
    weight. The names are HF's
    but for the weight-normed positional conv (``conv.g``, ``conv.v``, ``conv.layer.bias``:
    HF's ``weight_g`` (1, 1, k), ``weight_v`` and ``bias``, or with ``parametrizations``
    ``parametrizations.weight.original0`` / ``original1``); Linear and Conv1d weights are
    transposed."""
    which = 1 if parametrizations else 0
    table: dict[str, HFWeight] = {}
    for key in model.state_dict():
        if key.startswith(_POS):
            part = key[len(_POS):]
            if part == "g":
                table[key] = HFWeight((_POS + _WEIGHT_NORM_NAMES["g"][which],), lambda g: g.reshape(-1))
            elif part == "v":
                table[key] = _conv(_POS + _WEIGHT_NORM_NAMES["v"][which])
            else:
                table[key] = copied(_POS + part.removeprefix("layer."))
        elif key.endswith(".conv.weight"):
            table[key] = _conv(key)
        elif key.endswith(("_proj.weight", "_dense.weight", ".projection.weight", "lm_head.weight",
                           "project_hid.weight", "project_q.weight")):
            table[key] = linear(key)
        else:
            table[key] = copied(key)
    return table


_PRETRAINING_KEYS = ("quantizer.", "project_q.", "project_hid.")


def load_hf_wav2vec2_state_dict(model: Module, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ``Wav2Vec2ForCTC`` or ``Wav2Vec2ForPreTraining`` weights into ``model``
    (a :class:`Wav2Vec2ForCTC` or a :class:`~lamina.models.wav2vec2_pretraining.Wav2Vec2ForPreTraining`;
    a mapping of arrays or torch tensors, or safetensors files, see
    :func:`lamina.models.hf_weights.read_state_dict`). The positional conv's weight norm may be
    stored either way HF has saved it (``weight_g`` / ``weight_v`` or
    ``parametrizations.weight.original0`` / ``original1``). The pretraining model loads the
    quantizer's and projections' keys (``quantizer.codevectors``, ``quantizer.weight_proj.*``,
    ``project_q.*``, ``project_hid.*``) and ignores a CTC head (``lm_head.*``); the CTC model
    ignores the pretraining keys. ``strict``: every weight present and every other key used,
    else a KeyError listing them; a mis-shaped value raises :class:`lamina.ShapeError` naming
    the weight."""
    who = "load_hf_wav2vec2_state_dict"
    if not isinstance(model, (Wav2Vec2ForCTC, Wav2Vec2ForPreTraining)):
        raise TypeError(f"{who}: expected a Wav2Vec2ForCTC or Wav2Vec2ForPreTraining model, got "
                        f"{type(model).__name__}")
    arrays: Mapping = read_state_dict(state_dict, who)
    if not model.built:
        model.build()
    parametrizations = _POS + _WEIGHT_NORM_NAMES["g"][1] in arrays
    left_out = ("lm_head.",) if isinstance(model, Wav2Vec2ForPreTraining) else _PRETRAINING_KEYS

    def ignored(key: str) -> bool:
        return key.startswith(left_out)

    load_hf_state_dict(model, arrays, hf_wav2vec2_table(model, parametrizations), ignored, strict, who)
