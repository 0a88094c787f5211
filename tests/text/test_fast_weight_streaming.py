"""Carried states of the fast-weight mixers (DeltaNet, Gated DeltaNet, gated linear attention):
within carrying_states a FastWeightLM reads a text a piece at a time with the scores of one
call, and sample_text, reading the prompt once and then one token per call, draws the tokens
of the rerun on the whole prefix."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, watch_call_lengths
from lamina.models import FastWeightLM
from lamina.nn import DeltaNet
from lamina.text import Vocabulary, sample_text
from lamina.text.generate import carrying_states, reorder_caches

MIXERS = [("deltanet", {"use_short_conv": True}), ("gated_deltanet", {"form": "recurrent"}),
          ("gla", {"use_short_conv": True, "chunk_size": 4})]


def _model(vocab_size: int, mixer: str, options: dict, seed: int = 0) -> FastWeightLM:
    lamina.manual_seed(seed)
    model = FastWeightLM(vocab_size, embed_dim=16, num_layers=2, num_heads=2, mixer=mixer, initializer_range=1.0,
                         **options)        # sharp scores: the draws depend on the model
    model(lamina.tensor(np.zeros((1, 2), dtype=np.int64)))
    return model.eval()


@pytest.mark.parametrize("mixer, options", MIXERS)
def test_carried_states_give_the_scores_of_one_call(mixer, options):
    model = _model(11, mixer, options)
    ids = np.random.default_rng(0).integers(0, 11, (2, 9))
    with lamina.no_grad():
        whole = model(lamina.tensor(ids)).numpy()
        with carrying_states(model):
            pieces = [model(lamina.tensor(ids[:, a:b])).numpy() for a, b in ((0, 4), (4, 5), (5, 6), (6, 9))]
    assert model.streamable
    assert_close(np.concatenate(pieces, axis=1), whole, rtol=1e-5)


@pytest.mark.parametrize("mixer, options", MIXERS)
def test_sample_text_carries_states_and_draws_the_rerun_tokens(mixer, options):
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")     # no eos: every token is drawn
    model = _model(len(vocab), mixer, options, seed=1)
    rerun = sample_text(model, vocab, prompt="abc", max_length=12, seed=3, stream=False)
    seen = watch_call_lengths(model)
    carried = sample_text(model, vocab, prompt="abc", max_length=12, seed=3)
    assert carried == rerun and len(carried) > 3
    assert seen == [4] + [1] * 11       # no eos: 12 calls, the prompt (after bos) once, then a token each


def test_one_step_costs_the_same_however_long_the_text():
    """The inputs of every mixer's step, and the state it carries, keep their shapes."""
    model = _model(7, "deltanet", {"use_short_conv": True, "conv_size": 3})
    shapes = []
    for layer in model.mixers:
        layer.register_forward_hook(lambda m, inputs, out: shapes.append(
            (tuple(inputs[0].shape), tuple(a.shape for a in m._carried))))
    with lamina.no_grad(), carrying_states(model):
        for t in range(30):
            model(lamina.tensor(np.asarray([[t % 7]])))
    assert set(shapes) == {((1, 1, 16), ((1, 2, 48), (1, 2, 8, 8)))}     # conv_size - 1 inputs, (H, d, d)
    assert len(shapes) == 60


def test_reorder_states_keeps_rows_and_refuses_a_layer_not_stateful():
    model = _model(7, "gla", {"use_short_conv": True})
    ids = np.random.default_rng(1).integers(0, 7, (3, 5))
    with lamina.no_grad():
        whole = model(lamina.tensor(ids[[2, 0, 2]])).numpy()
        with carrying_states(model):
            model(lamina.tensor(ids[:, :3]))
            reorder_caches(model, np.asarray([2, 0, 2]))
            rest = model(lamina.tensor(ids[[2, 0, 2], 3:])).numpy()
    assert_close(rest, whole[:, 3:], rtol=1e-5)
    layer = DeltaNet(8, 2)
    with pytest.raises(ValueError, match="DeltaNet"):
        layer.reorder_states(np.asarray([0]))


def test_a_carried_state_of_another_batch_size_is_refused():
    layer = DeltaNet(8, 2)
    layer.stateful = True
    with lamina.no_grad():
        layer(lamina.tensor(np.zeros((2, 3, 8), dtype=np.float32)))
        with pytest.raises(lamina.ShapeError, match=r"DeltaNet.*batch of 2.*reset_states"):
            layer(lamina.tensor(np.zeros((1, 1, 8), dtype=np.float32)))
        layer.reset_states()
        assert layer(lamina.tensor(np.zeros((1, 1, 8), dtype=np.float32))).shape == (1, 1, 8)
