"""generate_ids / model.generate on token ids: greedy decoding against step-by-step argmax of
uncached forwards, left-padded batches against rows decoded alone, sampling against
sample_token on the processed scores, end and pad tokens, several sequences per prompt,
beam search, streaming, and speculative decoding (greedy: the plain greedy output; sampling:
the model's distribution)."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import models
from lamina.text import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    beam_search_ids,
    generate_ids,
    sample_token,
)
from lamina.text.generation_ids import _correction, _keeps, _Options, _softmax_row

V = 17
PROMPT = [3, 5, 7, 2, 9]


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _model(kind: str, vocab_size: int = V):
    if kind == "gpt2":
        return models.GPT2(vocab_size=vocab_size, n_positions=48, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                           resid_pdrop=0.0, attn_pdrop=0.0)
    small = {"vocab_size": vocab_size, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
             "num_key_value_heads": 1}
    if kind == "llama":
        return models.llama("tiny", **small)
    if kind == "mistral":
        return models.mistral("tiny", **small, sliding_window=4)
    return models.mamba("tiny", vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, state_size=4)


KINDS = ["gpt2", "llama", "mistral", "mamba"]


def _last_scores(model, ids) -> np.ndarray:
    model.eval()
    with lamina.no_grad():
        return model(lamina.tensor(np.asarray([ids]))).numpy()[0, -1].astype(np.float64)


def _greedy_by_rerun(model, ids, steps: int) -> list[int]:
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(_last_scores(model, ids).argmax()))
    return ids


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_equals_the_argmax_of_uncached_forwards(f64, kind):
    model = _model(kind)
    out = model.generate(np.array([PROMPT]), max_new_tokens=8)
    assert out.shape == (1, len(PROMPT) + 8)
    assert out[0].tolist() == _greedy_by_rerun(model, PROMPT, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_rows_equal_each_row_decoded_alone(f64, kind):
    model = _model(kind)
    short = [4, 6]
    ids = np.array([PROMPT, [0, 0, 0, *short]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=6)
    assert out[0].tolist() == _greedy_by_rerun(model, PROMPT, 6)
    assert out[1, :3].tolist() == [0, 0, 0]
    assert out[1, 3:].tolist() == _greedy_by_rerun(model, short, 6)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "mistral"])
def test_position_ids_count_from_the_first_real_token(f64, kind):
    model = _model(kind)
    ids = np.array([[0, 0, 4, 6]])
    mask = np.array([[0, 0, 1, 1]])
    model.eval()
    with lamina.no_grad():
        padded = model(lamina.tensor(ids), key_mask=lamina.tensor(mask.astype(bool)),
                       position_ids=np.cumsum(mask, axis=1) - 1 + (mask == 0)).numpy()
        alone = model(lamina.tensor(ids[:, 2:])).numpy()
        shifted = model(lamina.tensor(ids[:, 2:]), position_ids=np.array([[3, 4]])).numpy()
        stretched = model(lamina.tensor(ids[:, 2:]), position_ids=np.array([[0, 2]])).numpy()
    assert np.abs(stretched - alone)[:, 1].max() > 1e-6      # the positions are used
    np.testing.assert_allclose(padded[:, 2:], alone, atol=1e-12)
    if kind == "gpt2":                             # learned positions: other positions, other scores
        assert np.abs(shifted - alone).max() > 1e-3
    else:                                          # rotary: only i - j counts
        np.testing.assert_allclose(shifted, alone, atol=1e-10)


def test_rotary_positions_per_row_turn_each_row_by_its_own():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 6))
    positions = np.array([[0, 1, 2, 3], [5, 2, 7, 1]])
    both = lamina.functional.rotary_embedding(x, positions=positions).numpy()
    for row in range(2):
        alone = lamina.functional.rotary_embedding(x[row], positions=positions[row]).numpy()
        np.testing.assert_allclose(both[row], alone, atol=1e-12)


def test_sampling_with_a_seed_is_sample_token_on_the_processed_scores(f64):
    model = _model("gpt2")
    out = generate_ids(model, [PROMPT], max_new_tokens=5, do_sample=True, temperature=0.8, top_k=6, seed=3,
                       num_return_sequences=3, return_dict_in_generate=True)
    sequences = out.sequences
    assert sequences.shape == (3, len(PROMPT) + 5) and len(out.scores) == 5
    rng = np.random.default_rng(3)
    t = len(PROMPT)
    for step, scores in enumerate(out.scores):
        for row in range(3):
            prefix = sequences[row, :t + step]
            expected = TopKLogitsWarper(6)(prefix[None], TemperatureLogitsWarper(0.8)(
                prefix[None], _last_scores(model, prefix)[None]))[0]
            np.testing.assert_allclose(scores[row], expected, rtol=1e-9, atol=1e-12)
            assert sequences[row, t + step] == sample_token(scores[row], rng)
    again = generate_ids(model, [PROMPT], max_new_tokens=5, do_sample=True, temperature=0.8, top_k=6,
                         generator=np.random.default_rng(3), num_return_sequences=3)
    np.testing.assert_array_equal(again, sequences)
    assert len({tuple(row) for row in sequences.tolist()}) > 1


def test_finished_rows_get_the_pad_token_and_generation_stops(f64):
    model = _model("llama")
    greedy = _greedy_by_rerun(model, PROMPT, 6)
    eos = greedy[len(PROMPT) + 1]                  # the second new token
    other = [1, 8, 8]
    out = model.generate(np.array([PROMPT, [0, 0, *other]]), attention_mask=[[1] * 5, [0, 0, 1, 1, 1]],
                         max_new_tokens=6, eos_token_id=[eos, 99], pad_token_id=0)
    first = greedy[:greedy.index(eos, len(PROMPT)) + 1]
    row = out[0].tolist()
    assert row[:len(first)] == first and set(row[len(first):]) <= {0}
    alone = _greedy_by_rerun(model, other, 6)
    if eos in alone[len(other):]:
        alone = alone[:alone.index(eos, len(other)) + 1]
    assert out[1, 2:2 + len(alone)].tolist() == alone
    ended = max(len(first) - len(PROMPT), len(alone) - len(other))
    assert out.shape[1] == len(PROMPT) + ended     # stops once every row has ended


def test_min_new_tokens_delays_the_end(f64):
    model = _model("gpt2")
    greedy = _greedy_by_rerun(model, PROMPT, 1)
    eos = greedy[-1]                               # the very first greedy token
    assert model.generate([PROMPT], max_new_tokens=4, eos_token_id=eos).shape[1] == len(PROMPT) + 1
    out = model.generate([PROMPT], max_new_tokens=4, eos_token_id=eos, min_new_tokens=3,
                         return_dict_in_generate=True)
    assert eos not in out.sequences[0, len(PROMPT):len(PROMPT) + 3].tolist()
    assert all(np.isneginf(s[0, eos]) for s in out.scores[:3])


def test_beam_search_returns_the_best_beams(f64):
    model = _model("gpt2")
    out = model.generate([PROMPT], max_new_tokens=5, num_beams=3, num_return_sequences=2, length_penalty=1.0)
    found = beam_search_ids(model, PROMPT, None, beam_width=3, max_length=5, length_penalty=1.0, num_return=2)
    assert out.tolist() == [PROMPT + h.ids for h in found]


def test_streamer_sees_every_new_token(f64):
    model = _model("mamba")
    seen = []
    out = model.generate(np.array([PROMPT, PROMPT[::-1]]), max_new_tokens=4, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, len(PROMPT):])

    class Streamer:
        def __init__(self):
            self.parts, self.ended = [], False

        def put(self, ids):
            self.parts.append(np.asarray(ids))

        def end(self):
            self.ended = True

    streamer = Streamer()
    model.generate([PROMPT], max_new_tokens=3, streamer=streamer)
    assert streamer.ended and streamer.parts[0].tolist() == [PROMPT] and len(streamer.parts) == 4


def test_options_are_checked():
    model = _model("gpt2")
    with pytest.raises(ValueError, match="generate_ids: attention_mask must pad on the left"):
        model.generate([[1, 2, 3]], attention_mask=[[1, 0, 1]])
    with pytest.raises(ValueError, match="num_return_sequences=2 needs do_sample=True"):
        model.generate([[1, 2, 3]], num_return_sequences=2)
    with pytest.raises(ValueError, match="max_length=3 leaves no room"):
        model.generate([[1, 2, 3]], max_length=3)
    with pytest.raises(ValueError, match="assistant_model must be another model"):
        model.generate([[1, 2, 3]], assistant_model=model)


def _close_copy(model, kind: str, noise: float):
    """A model of ``kind`` with ``model``'s weights plus small noise: a draft that often agrees."""
    other = _model(kind)
    other.eval()
    with lamina.no_grad():
        other(lamina.tensor(np.array([PROMPT])))
    rng = np.random.default_rng(0)
    state = {k: v + noise * rng.normal(size=v.shape) for k, v in model.state_dict().items()}
    other.load_state_dict(state)
    return other


@pytest.mark.parametrize("kind", ["gpt2", "mistral", "mamba"])
def test_assisted_greedy_equals_plain_greedy(f64, kind):
    model = _model(kind)
    plain = model.generate([PROMPT], max_new_tokens=12)
    for assistant in (_model(kind), _close_copy(model, kind, 0.002)):
        out = model.generate([PROMPT], max_new_tokens=12, assistant_model=assistant, num_assistant_tokens=3,
                             return_dict_in_generate=True)
        np.testing.assert_array_equal(out.sequences, plain)
        assert out.draft_tokens > 0 and 0 <= out.accepted_tokens <= out.draft_tokens
    assert out.acceptance_rate > 0.5                # the close copy's drafts mostly stand


def test_speculative_acceptance_rule_keeps_the_model_distribution():
    rng = np.random.default_rng(0)
    p_scores, q_scores = rng.normal(size=4), rng.normal(size=4)
    p, q = _softmax_row(p_scores), _softmax_row(q_scores)
    options = _Options(1, None, True, [], None, rng, None)
    draws = 20000
    counts = np.zeros(4)
    for _ in range(draws):
        token = int(rng.choice(4, p=q))
        if not _keeps(token, p_scores, q, options):
            token = _correction(token, p_scores, q, options)
        counts[token] += 1
    np.testing.assert_allclose(counts / draws, p, atol=4 * np.sqrt(0.25 / draws))
    assert np.abs(q - p).max() > 0.1               # the draft's distribution is not the model's


def test_assisted_sampling_draws_from_the_model(f64):
    model, assistant = _model("gpt2", vocab_size=4), _model("gpt2", vocab_size=4)
    prompt = [1, 2]
    first = _softmax_row(_last_scores(model, prompt))
    runs, counts = 300, np.zeros((4, 4))
    rng = np.random.default_rng(5)
    for _ in range(runs):
        out = model.generate([prompt], max_new_tokens=2, do_sample=True, assistant_model=assistant,
                             num_assistant_tokens=2, generator=rng)
        counts[out[0, 2], out[0, 3]] += 1
    second = np.stack([_softmax_row(_last_scores(model, prompt + [a])) for a in range(4)])
    expected = first[:, None] * second
    chi2 = ((counts - runs * expected) ** 2 / (runs * expected)).sum()
    assert chi2 < 35.0                             # 15 degrees of freedom: p < 0.003


def test_mamba_attention_mask_keeps_the_pads_out_of_the_state(f64):
    model = _model("mamba")
    model.eval()
    with lamina.no_grad():
        padded = model(lamina.tensor(np.array([[0, 0, 0, 4, 6, 1]])), attention_mask=[[0, 0, 0, 1, 1, 1]]).numpy()
        alone = model(lamina.tensor(np.array([[4, 6, 1]]))).numpy()
        unmasked = model(lamina.tensor(np.array([[0, 0, 0, 4, 6, 1]]))).numpy()
    np.testing.assert_allclose(padded[:, 3:], alone, atol=1e-12)
    assert np.abs(unmasked[:, 3:] - alone).max() > 1e-6


class _NoMask(lamina.nn.Module):
    """A language model that takes no mask: padded batches decode one row at a time."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids):
        return self.inner(ids)


def test_a_model_without_masks_decodes_padded_rows_alone(f64):
    inner = _model("gpt2")
    model = _NoMask(inner)
    ids = np.array([PROMPT, [0, 0, 0, 4, 6]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    out = generate_ids(model, ids, attention_mask=mask, max_new_tokens=5, return_dict_in_generate=True)
    assert out.sequences[0].tolist() == _greedy_by_rerun(inner, PROMPT, 5)
    assert out.sequences[1, 3:].tolist() == _greedy_by_rerun(inner, [4, 6], 5)
    assert len(out.scores) == 5 and out.scores[0].shape == (2, V)
