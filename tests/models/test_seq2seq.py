"""The encoder-decoder with attention: it learns to reverse sequences, its attention learns
the alignment (output t looks at input T - 1 - t), its gradients are right, it saves and
loads, and greedy decoding stops at the end token."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import optim
from lamina.models import AttentionSeq2Seq

PAD, BOS, EOS = 0, 1, 2
VOCAB, STEPS = 13, 5


def _reversal(rng, n):
    source = rng.integers(3, VOCAB, (n, STEPS))
    target = source[:, ::-1]
    target_in = np.concatenate([np.full((n, 1), BOS), target], axis=1)
    target_out = np.concatenate([target, np.full((n, 1), EOS)], axis=1)
    return source, target_in, target_out


def test_learns_to_reverse_and_attends_to_the_mirrored_step():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = AttentionSeq2Seq(VOCAB, VOCAB, embed_dim=16, hidden=32, attention_units=16)
    model(*_reversal(rng, 2)[:2])
    opt = optim.Adam(model, lr=0.01)
    for _ in range(150):
        source, target_in, target_out = _reversal(rng, 64)
        cost = F.categorical_cross_entropy(model(source, target_in), target_out, from_logits=True)
        opt.zero_grad()
        cost.backward()
        opt.step()
    source, _, target_out = _reversal(rng, 200)
    ids, alpha = model.translate(source, BOS, EOS, max_length=10, return_attention=True)
    assert ids.shape == (200, STEPS + 1) and alpha.shape == (200, STEPS + 1, STEPS)
    assert (ids == target_out).all(axis=1).mean() > 0.95
    assert np.allclose(alpha.sum(axis=-1), 1, atol=1e-5)
    mirrored = alpha[:, :STEPS].argmax(axis=-1) == np.arange(STEPS)[::-1]
    assert mirrored.mean() > 0.9                             # the alignment, learned without being told
    assert model.training                                    # translate put the mode back


def test_gradcheck():
    lamina.set_default_dtype(np.float64)
    model = AttentionSeq2Seq(6, 5, embed_dim=3, hidden=2, attention_units=3)
    rng = np.random.default_rng(1)
    source, target_in = rng.integers(0, 6, (2, 3)), rng.integers(0, 5, (2, 2))
    model(source, target_in)
    params = model.parameters()
    # 2 embeddings, 2 x 4 encoder GRU, 4 decoder GRU, 4 attention, 2 + 2 Dense weights and biases
    assert len(params) == 22
    assert lamina.gradcheck(lambda *_: model(source, target_in), *params)


def test_saves_loads_and_checks_its_arguments(tmp_path):
    model = AttentionSeq2Seq(9, 7, embed_dim=4, hidden=5, attention_units=3, name="translator")
    rng = np.random.default_rng(2)
    source, target_in = rng.integers(0, 9, (3, 6)), rng.integers(0, 7, (3, 4))
    model.eval()
    before = model(source, target_in).numpy()
    assert before.shape == (3, 4, 7)
    lamina.save(model, tmp_path / "seq2seq.safetensors")
    again = lamina.load(tmp_path / "seq2seq.safetensors")
    np.testing.assert_array_equal(again(source, target_in).numpy(), before)
    assert again.name == "translator" and again.get_config() == model.get_config()
    with pytest.raises(ValueError, match="AttentionSeq2Seq: hidden must be a positive int"):
        AttentionSeq2Seq(9, 7, hidden=0)


def test_translate_stops_when_every_row_has_ended():
    lamina.manual_seed(3)
    model = AttentionSeq2Seq(5, 4, embed_dim=2, hidden=3, attention_units=2)
    model.output.build((None, 9))                            # [s, c]: H + 2H values
    model.output.built = True
    model.output.bias.data[:] = np.array([0, 0, 50, 0], dtype=model.output.bias.data.dtype)  # always the end id
    ids = model.translate(np.zeros((2, 3), dtype=np.int64), bos_id=1, eos_id=2, max_length=10)
    assert ids.tolist() == [[2], [2]]
