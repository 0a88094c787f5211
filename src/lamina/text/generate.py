"""Sampling text from a language model, one token at a time.

The model maps ids (1, t) to scores (1, t, V); the next token is drawn from
softmax(z^<t> / temperature) over the last step's scores, appended, and the model runs
again on the longer prefix, until the end-of-sequence token or ``max_length`` tokens.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.text.vocabulary import Vocabulary

__all__ = ["sample_text"]


def sample_text(model, vocab: Vocabulary, prompt: str = "", max_length: int = 50, temperature: float = 1.0,
                top_k: int | None = None, seed: int | None = None, context: int | None = None) -> str:
    """Continue ``prompt`` (after the bos token, when the vocabulary has one) with tokens
    drawn from the model. ``temperature`` < 1 sharpens the distribution, > 1 flattens it;
    ``top_k`` draws among the k most likely tokens only. ``context``: the model reads at
    most the last ``context`` tokens (default: the smallest ``max_len`` of the model's
    position layers, if it has any, else the whole text so far). Returns the prompt and its
    continuation, special tokens left out."""
    if not temperature > 0:
        raise ValueError(f"sample_text: temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise ValueError(f"sample_text: top_k must lie in [1, {len(vocab)}], got {top_k!r}")
    if context is None:
        limits = [m.max_len for m in model.modules() if isinstance(getattr(m, "max_len", None), int)]
        context = min(limits) if limits else None
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise ValueError(f"sample_text: context must be a positive int, got {context!r}")
    rng = np.random.default_rng(seed)
    ids = list(vocab.encode(prompt, add_bos=vocab.bos_id is not None))
    if not ids:
        raise ValueError("sample_text: an empty prompt needs a vocabulary with a bos token to start from")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            for _ in range(max_length):
                window = ids if context is None else ids[-context:]
                scores = model(tensor(np.asarray([window], dtype=np.int64))).numpy()
                if scores.ndim != 3 or scores.shape[:2] != (1, len(window)) or scores.shape[2] != len(vocab):
                    raise ValueError(f"sample_text: the model must map ids (1, {len(window)}) to scores (1, "
                                     f"{len(window)}, {len(vocab)}), got {scores.shape}")
                z = scores[0, -1].astype(np.float64) / temperature
                if top_k is not None:
                    z[np.argsort(z)[:-top_k]] = -np.inf
                p = np.exp(z - z.max())
                next_id = int(rng.choice(len(vocab), p=p / p.sum()))
                if next_id == vocab.eos_id:
                    break
                ids.append(next_id)
    finally:
        model.train(was_training)
    return vocab.decode(ids)
