"""Sequence models (course notes, RNN, NLP): a recurrent language model and a recurrent
text classifier, both reading integer token ids.

* :func:`rnn_language_model`: many to many. Embedding, recurrent layers returning every
  step, and a Dense layer giving the scores of the next token at each step:
  ids (N, T) -> scores (N, T, V). Train it on ``shifted_pairs`` or
  ``language_model_windows`` (:mod:`lamina.text`) with
  ``categorical_cross_entropy(from_logits=True)``; sample from it with
  :func:`lamina.text.sample_text`.
* :func:`rnn_classifier`: many to one. Embedding, recurrent layers, the last state (or the
  two directions' last states) and a Dense layer: ids (N, T) -> scores (N, classes).
* :func:`transformer_language_model`: a decoder-only Transformer. Embedding, a position
  layer, causal pre-norm encoder layers, a final LayerNorm and a Dense layer:
  ids (N, T) -> scores (N, T, V), the scores at step t seeing the tokens up to t only.
"""

from __future__ import annotations

from lamina import nn
from lamina.nn.layer import positive_int

__all__ = ["rnn_classifier", "rnn_language_model", "transformer_language_model"]

_CELLS = {"rnn": nn.SimpleRNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _cell(cell: str, builder: str):
    if cell not in _CELLS:
        raise ValueError(f"{builder}: cell must be one of {tuple(_CELLS)}, got {cell!r}")
    return _CELLS[cell]


def _check_sizes(builder: str, **sizes) -> None:
    for what, value in sizes.items():
        positive_int(value, f"{builder}: {what}")


def rnn_language_model(vocab_size: int, embed_dim: int = 32, hidden: int = 128, cell: str = "gru",
                       num_layers: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """Scores of the next token at every step: e^<t> = E[x^<t>], a^<t> from ``num_layers``
    stacked ``cell`` layers ('rnn', 'gru' or 'lstm') of ``hidden`` units, z^<t> = a^<t> W + b
    over the ``vocab_size`` tokens. ``dropout`` acts between the recurrent layers and before
    the output layer."""
    _check_sizes("rnn_language_model", vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden,
                 num_layers=num_layers)
    recurrent = _cell(cell, "rnn_language_model")
    layers: list[nn.Module] = [nn.Embedding(vocab_size, embed_dim)]
    for _ in range(num_layers):
        layers.append(recurrent(hidden, return_sequences=True))
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Dense(vocab_size))
    return nn.Sequential(*layers)


def rnn_classifier(vocab_size: int, num_classes: int, embed_dim: int = 32, hidden: int = 64, cell: str = "gru",
                   bidirectional: bool = False, num_layers: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """Class scores of a whole sequence from the last state a^<T> of the top recurrent
    layer (with ``bidirectional``, the forward a^<T> joined with the backward layer's state
    after reading back to the first token). Pad sequences at the start (``pad_sequences``'s
    default) so that the last steps read are the sequence's own."""
    _check_sizes("rnn_classifier", vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim,
                 hidden=hidden, num_layers=num_layers)
    recurrent = _cell(cell, "rnn_classifier")
    layers: list[nn.Module] = [nn.Embedding(vocab_size, embed_dim)]
    for k in range(num_layers):
        layer = recurrent(hidden, return_sequences=k < num_layers - 1)
        layers.append(nn.Bidirectional(layer) if bidirectional else layer)
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Dense(num_classes))
    return nn.Sequential(*layers)


_POSITIONAL = ("sinusoidal", "learned", "rotary", "alibi")


def transformer_language_model(vocab_size: int, d_model: int = 64, num_heads: int = 4, num_layers: int = 2,
                               dim_feedforward: int = 128, max_len: int = 256, dropout: float = 0.0,
                               positional: str = "sinusoidal", num_kv_heads: int | None = None,
                               window: int | None = None) -> nn.Sequential:
    """Scores of the next token at every step from a stack of ``num_layers`` causal Transformer
    layers (pre-norm, ``num_heads`` heads of d_model / num_heads features, a
    feed-forward network of ``dim_feedforward`` units): e^<t> = E[x^<t>] + p^<t>, with p
    the sinusoidal encoding (``positional='sinusoidal'``) or a learned table
    (``'learned'``) of ``max_len`` positions, or e^<t> = E[x^<t>] with rotary positions
    in every layer's attention (``'rotary'``; ``'alibi'`` adds ALiBi's distance biases
    instead: no position layer, no length limit either way), then
    the layers, a LayerNorm and z^<t> = h^<t> W + b over the ``vocab_size`` tokens.
    Every layer masks the future, so the scores at step t depend on x^<1..t> alone and
    one pass scores all the next tokens of a sequence. ``dropout`` acts after the
    position layer and inside every Transformer layer. ``num_kv_heads``: grouped-query
    attention; ``window``: each token attends to at most the last ``window`` tokens."""
    _check_sizes("transformer_language_model", vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
                 num_layers=num_layers, dim_feedforward=dim_feedforward, max_len=max_len)
    if positional not in _POSITIONAL:
        raise ValueError(f"transformer_language_model: positional must be one of {_POSITIONAL}, got {positional!r}")
    if d_model % num_heads:
        raise ValueError(f"transformer_language_model: d_model {d_model} is not divisible by num_heads {num_heads}")
    layers: list[nn.Module] = [nn.Embedding(vocab_size, d_model)]
    if positional == "sinusoidal":
        layers.append(nn.PositionalEncoding(max_len, dropout=dropout))
    elif positional in ("rotary", "alibi"):
        if dropout:
            layers.append(nn.Dropout(dropout))
    else:
        layers.append(nn.PositionEmbedding(max_len))
        if dropout:
            layers.append(nn.Dropout(dropout))
    for _ in range(num_layers):
        layers.append(nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout=dropout, norm_first=True,
                                              causal=True, rotary=positional == "rotary", alibi=positional == "alibi",
                                              num_kv_heads=num_kv_heads, window=window))
    layers.append(nn.LayerNorm(-1))
    layers.append(nn.Dense(vocab_size))
    return nn.Sequential(*layers)
