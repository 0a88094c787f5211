"""Checks shared by the tests of the Hugging Face-layout language models."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import functional as F
from lamina import optim
from lamina.text import Vocabulary

SHORT_TEXT = "the cat sat on the mat. "


def assert_overfits_a_short_text(make_model, steps: int) -> None:
    """A model made by ``make_model(vocab_size)`` learns SHORT_TEXT's next characters with
    Adam in ``steps`` steps: cost below 0.05, every next character predicted, in under 20 s."""
    vocab = Vocabulary(sorted(set(SHORT_TEXT)), pad=None, unk=None)
    ids = np.asarray([vocab.encode(SHORT_TEXT)])
    lamina.manual_seed(0)
    model = make_model(len(vocab))
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(steps):
        loss = F.categorical_cross_entropy(model(ids[:, :-1]), ids[:, 1:], from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.numpy()) < 0.05
    assert (model(ids[:, :-1]).numpy().argmax(-1) == ids[:, 1:]).all()
