"""Hugging Face's beam search in generate_ids: a toy model whose next-token scores are a fixed
random function of the whole (unpadded) prefix, searched against brute force and against a
plain-Python reference of Hugging Face's loop written here beam by beam (early_stopping True /
False / "never", length penalty, logits processors, groups with the Hamming diversity
penalty); beam sampling's draws; left-padded batches against each prompt alone; and tiny GPT-2
and Llama models searched on their key/value caches against the same search rerunning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lamina
from lamina import models
from lamina.text import generate_ids
from lamina.text.beam_generation import draw_candidates

EOS = 0
V = 5
PROMPT = [3, 1, 4]


class PrefixModel(lamina.nn.Module):
    """Next-token scores drawn from a seed made of ``seed`` and the real tokens so far (the
    pads of ``key_mask`` left out), ``eos_bias`` added to the end token's; counts its calls."""

    def __init__(self, seed: int = 0, vocab: int = V, scale: float = 2.0, eos_bias: float = 0.0):
        super().__init__()
        self.seed, self.vocab, self.scale, self.eos_bias = seed, vocab, scale, eos_bias
        self.calls = 0

    def logits(self, prefix) -> np.ndarray:
        z = self.scale * np.random.default_rng([self.seed, *[int(i) for i in prefix]]).normal(size=self.vocab)
        z[EOS] += self.eos_bias
        return z

    def forward(self, ids, key_mask=None):
        ids = ids.numpy()
        keep = np.ones(ids.shape, dtype=bool) if key_mask is None else key_mask.numpy().astype(bool)
        self.calls += 1
        out = np.zeros((*ids.shape, self.vocab))
        for n, t in itertools.product(range(ids.shape[0]), range(ids.shape[1])):
            out[n, t] = self.logits(ids[n, :t + 1][keep[n, :t + 1]])
        return out


def log_softmax(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


# -- a plain-Python reference of Hugging Face's beam search, one beam at a time --------------
def reference_search(model, prompt, num_beams, max_new, eos=(EOS,), length_penalty=1.0, early_stopping=False,
                     groups=1, diversity=0.0, process=None, num_return=1, pad=EOS):
    """Returns [(score, new tokens)] best first and the number of steps taken."""
    size = num_beams // groups
    keep = max(2, 1 + len(eos)) * size
    beams = [[(list(prompt), 0.0 if j == 0 else -1e9) for j in range(size)] for _ in range(groups)]
    kept = [[] for _ in range(groups)]                  # (score, tokens) of ended hypotheses
    done = [False] * groups

    def offer(k, tokens, total):
        kept[k].append((total / len(tokens) ** length_penalty, tokens))
        kept[k].sort(key=lambda h: h[0])                 # ascending: the worst first
        if len(kept[k]) > size:
            kept[k].pop(0)

    steps = 0
    for step in range(max_new):
        steps += 1
        chosen_now = []
        for k in range(groups):
            if done[k]:
                beams[k] = [(beams[k][0][0] + [pad], 0.0)] * size
                chosen_now += [pad] * size
                continue
            candidates = []
            for j, (seq, total) in enumerate(beams[k]):
                scores = log_softmax(model.logits(seq))
                for token in chosen_now:
                    scores[token] -= diversity
                if process is not None:
                    scores = process(seq, scores)
                candidates += [(total + scores[v], j, v) for v in range(len(scores))]
            candidates.sort(key=lambda c: -c[0])
            candidates = candidates[:keep]
            survivors = []
            for rank, (total, j, v) in enumerate(candidates):
                seq = beams[k][j][0]
                if v in eos:
                    if rank < size:
                        offer(k, seq[len(prompt):] + [v], total)
                else:
                    survivors.append((seq + [v], total))
                if len(survivors) == size:
                    break
            beams[k] = survivors
            chosen_now += [seq[-1] for seq, _ in survivors]
            best = candidates[0][0]
            if len(kept[k]) == size:
                worst = kept[k][0][0]
                length = step + 1
                if early_stopping == "never" and length_penalty > 0:
                    length = max_new
                done[k] = early_stopping is True or worst >= best / length ** length_penalty
        if all(done):
            break
    for k in range(groups):
        if not done[k]:
            for seq, total in beams[k]:
                tokens = seq[len(prompt):]
                score = total / len(tokens) ** length_penalty
                if len(kept[k]) < size or score > kept[k][0][0]:
                    offer(k, tokens, total)
    pool = sorted((h for hs in kept for h in hs), key=lambda h: h[0])
    return [pool.pop() for _ in range(num_return)], steps


def _found(out, prompt_length: int, eos=(EOS,)):
    """[(score, new tokens)] of a generate_ids output for one prompt, the right pads dropped."""
    found = []
    for row, score in zip(out.sequences, out.sequences_scores):
        tokens = row[prompt_length:].tolist()
        ended = [i for i, t in enumerate(tokens) if t in eos]
        found.append((score, tokens[:ended[0] + 1] if ended else tokens))
    return found


def _assert_same(found, expected):
    assert [t for _, t in found] == [t for _, t in expected]
    np.testing.assert_allclose([s for s, _ in found], [s for s, _ in expected], rtol=1e-10)


# -- brute force ------------------------------------------------------------------------------
@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 1.0, 2.0])
def test_never_with_enough_beams_finds_the_best_sequence_by_brute_force(length_penalty):
    model, max_new = PrefixModel(seed=1, vocab=4, eos_bias=0.5), 3
    best = None
    for length in range(1, max_new + 1):
        for tokens in itertools.product(range(4), repeat=length):
            if EOS in tokens[:-1] or (length < max_new and tokens[-1] != EOS):
                continue
            total = sum(log_softmax(model.logits(PROMPT + list(tokens[:i])))[t] for i, t in enumerate(tokens))
            score = total / length ** length_penalty
            if best is None or score > best[0]:
                best = (score, list(tokens))
    out = generate_ids(model, [PROMPT], num_beams=4 * 3 ** (max_new - 1), max_new_tokens=max_new,
                       eos_token_id=EOS, early_stopping="never", length_penalty=length_penalty,
                       return_dict_in_generate=True)
    _assert_same(_found(out, len(PROMPT)), [best])


# -- the stopping rules -----------------------------------------------------------------------
def _steps_and_found(model, early_stopping, **options):
    model.calls = 0
    out = generate_ids(model, [PROMPT], eos_token_id=EOS, early_stopping=early_stopping,
                       return_dict_in_generate=True, **options)
    return model.calls, _found(out, len(PROMPT))


def test_the_three_stopping_rules_match_the_reference_and_stop_in_order():
    options = {"num_beams": 2, "max_new_tokens": 8, "num_return_sequences": 2}
    ordered = 0
    for seed in range(12):
        model = PrefixModel(seed=seed, eos_bias=1.0)
        calls = {}
        for mode in (True, False, "never"):
            calls[mode], found = _steps_and_found(model, mode, **options)
            expected, steps = reference_search(model, PROMPT, 2, 8, early_stopping=mode, num_return=2)
            _assert_same(found, expected)
            assert calls[mode] == steps             # one model call per step
        assert calls[True] <= calls[False] <= calls["never"]
        ordered += calls[True] < calls[False] < calls["never"]
    assert ordered >= 1                           # a case where each rule stops later than the one before


@pytest.mark.parametrize("length_penalty", [-0.5, 0.0, 2.0])
@pytest.mark.parametrize("mode", [True, False, "never"])
def test_length_penalty_and_several_returned_beams_match_the_reference(mode, length_penalty):
    model = PrefixModel(seed=7, eos_bias=0.8)
    _, found = _steps_and_found(model, mode, num_beams=3, max_new_tokens=6, num_return_sequences=3,
                                length_penalty=length_penalty)
    expected, _ = reference_search(model, PROMPT, 3, 6, early_stopping=mode, num_return=3,
                                   length_penalty=length_penalty)
    _assert_same(found, expected)


def test_sequences_scores_and_beam_indices_describe_the_returned_beams():
    model = PrefixModel(seed=3, eos_bias=0.5)
    out = generate_ids(model, [PROMPT], num_beams=3, num_return_sequences=3, max_new_tokens=5, eos_token_id=EOS,
                       length_penalty=1.5, return_dict_in_generate=True)
    for (score, tokens), lineage in zip(_found(out, len(PROMPT)), out.beam_indices):
        total = sum(log_softmax(model.logits(PROMPT + tokens[:i]))[t] for i, t in enumerate(tokens))
        assert score == pytest.approx(total / len(tokens) ** 1.5, rel=1e-12)
        assert (lineage[:len(tokens)] >= 0).all() and (lineage[len(tokens):] == -1).all()
    assert out.scores[0].shape == (3, V)


def test_several_end_tokens_widen_the_candidates_and_end_beams():
    model = PrefixModel(seed=6, eos_bias=0.5)
    out = generate_ids(model, [PROMPT], num_beams=2, max_new_tokens=6, eos_token_id=[EOS, 2], pad_token_id=EOS,
                       num_return_sequences=2, return_dict_in_generate=True)
    expected, _ = reference_search(model, PROMPT, 2, 6, eos=(EOS, 2), num_return=2)
    _assert_same(_found(out, len(PROMPT), eos=(EOS, 2)), expected)
    assert any(tokens[-1] == 2 for _, tokens in expected)


# -- logits processors ------------------------------------------------------------------------
def _reference_processors(prompt_length, penalty, ngram, bad, min_new):
    def process(seq, scores):
        scores = scores.copy()
        for token in set(seq):
            scores[token] = scores[token] / penalty if scores[token] > 0 else scores[token] * penalty
        for i in range(len(seq) - ngram + 1):
            if seq[i:i + ngram - 1] == seq[len(seq) - ngram + 1:]:
                scores[seq[i + ngram - 1]] = -np.inf
        for word in bad:
            if seq[len(seq) - len(word) + 1:] == word[:-1] or len(word) == 1:
                scores[word[-1]] = -np.inf
        if len(seq) - prompt_length < min_new:
            scores[EOS] = -np.inf
        return scores
    return process


@pytest.mark.parametrize("mode", [True, False, "never"])
def test_processors_act_on_the_log_probabilities_as_the_reference(mode):
    model = PrefixModel(seed=5, eos_bias=1.5)
    options = {"repetition_penalty": 1.8, "no_repeat_ngram_size": 2, "bad_words_ids": [[2], [1, 3]],
               "min_new_tokens": 2}
    _, found = _steps_and_found(model, mode, num_beams=3, max_new_tokens=6, num_return_sequences=2, **options)
    process = _reference_processors(len(PROMPT), 1.8, 2, [[2], [1, 3]], 2)
    expected, _ = reference_search(model, PROMPT, 3, 6, early_stopping=mode, num_return=2, process=process)
    _assert_same(found, expected)
    plain, _ = reference_search(model, PROMPT, 3, 6, early_stopping=mode, num_return=2)
    assert [t for _, t in plain] != [t for _, t in expected]          # the processors changed the beams
    assert all(2 not in t and len(t) >= 3 for _, t in found)


# -- groups ----------------------------------------------------------------------------------
@pytest.mark.parametrize("diversity", [0.0, 0.7, 5.0])
def test_group_beam_search_matches_the_reference(diversity):
    model = PrefixModel(seed=11, eos_bias=0.5)
    _, found = _steps_and_found(model, False, num_beams=4, num_beam_groups=2, diversity_penalty=diversity,
                                max_new_tokens=6, num_return_sequences=4)
    expected, _ = reference_search(model, PROMPT, 4, 6, groups=2, diversity=diversity, num_return=4)
    _assert_same(found, expected)


def test_the_diversity_penalty_changes_the_later_groups_choices():
    model = PrefixModel(seed=2)
    first = {}
    for diversity in (0.0, 50.0):
        out = generate_ids(model, [PROMPT], num_beams=4, num_beam_groups=2, diversity_penalty=diversity,
                           max_new_tokens=3, num_return_sequences=4, return_dict_in_generate=True)
        group = out.beam_indices[:, 0] // 2               # the beam each sequence took its first token in
        first[diversity] = [set(out.sequences[group == k, len(PROMPT)].tolist()) for k in (0, 1)]
    assert first[0.0][0] == first[0.0][1]                 # without a penalty both groups search alike
    assert not first[50.0][0] & first[50.0][1]            # with a large one they start apart


# -- sampling -------------------------------------------------------------------------------
def test_candidates_are_drawn_from_the_softmax_of_the_totals():
    rng = np.random.default_rng(0)
    totals = rng.normal(size=8) - 3.0
    p = np.exp(totals) / np.exp(totals).sum()
    draws = 6000
    counts = np.zeros(8)
    for _ in range(draws):
        drawn = draw_candidates(totals, 4, rng)
        assert len(set(drawn.tolist())) == 4
        counts[drawn[0]] += 1
    chi2 = ((counts - draws * p) ** 2 / (draws * p)).sum()
    assert chi2 < 24.3                                    # 7 degrees of freedom: p < 0.001


def test_beam_sampling_is_reproducible_and_draws_within_the_warped_support():
    model = PrefixModel(seed=4, vocab=9, scale=1.0)
    options = {"num_beams": 2, "max_new_tokens": 5, "do_sample": True, "top_k": 4, "temperature": 0.7,
               "num_return_sequences": 2, "eos_token_id": EOS, "return_dict_in_generate": True}
    runs = [generate_ids(model, [PROMPT], seed=3, **options) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].sequences, runs[1].sequences)
    seen = set()
    for seed in range(6):
        out = generate_ids(model, [PROMPT], seed=seed, **options)
        for (score, tokens) in _found(out, len(PROMPT)):
            seen.add(tuple(tokens))
            total = 0.0
            for i, token in enumerate(tokens):
                processed = log_softmax(model.logits(PROMPT + tokens[:i])) / 0.7
                assert token in np.argsort(-processed)[:4]     # top-k of the warped scores
                total += processed[token]
            assert score == pytest.approx(total / len(tokens), rel=1e-10)
    assert len(seen) > 2                                  # the draws differ with the seed
    greedy = generate_ids(model, [PROMPT], num_beams=2, max_new_tokens=5, eos_token_id=EOS)
    assert greedy.shape[1] >= len(PROMPT) + 1


# -- batches ----------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {"num_beams": 3, "num_return_sequences": 2},
    {"num_beams": 2, "early_stopping": True, "length_penalty": 0.5},
    {"num_beams": 2, "early_stopping": "never", "no_repeat_ngram_size": 2, "min_new_tokens": 2},
    {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5, "num_return_sequences": 3},
])
def test_left_padded_prompts_give_what_each_prompt_gives_alone(options):
    model = PrefixModel(seed=9, eos_bias=1.0)
    prompts = [PROMPT, [2, 4], [1]]
    width = max(map(len, prompts))
    ids = np.array([[EOS] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batch = generate_ids(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=EOS,
                         return_dict_in_generate=True, **options)
    per_prompt = options.get("num_return_sequences", 1)
    for i, prompt in enumerate(prompts):
        alone = generate_ids(model, [prompt], max_new_tokens=6, eos_token_id=EOS, return_dict_in_generate=True,
                             **options)
        rows = slice(i * per_prompt, (i + 1) * per_prompt)
        for got, want in zip(batch.sequences[rows], alone.sequences):
            assert got[width - len(prompt):width].tolist() == prompt
            new = want[len(prompt):].tolist()
            assert got[width:width + len(new)].tolist() == new and set(got[width + len(new):].tolist()) <= {EOS}
        np.testing.assert_allclose(batch.sequences_scores[rows], alone.sequences_scores, rtol=1e-12)


class NoMask(PrefixModel):
    """A model that takes no mask: each padded prompt is searched alone."""

    def forward(self, ids):
        return super().forward(ids)


def test_a_model_without_masks_searches_each_padded_prompt_alone():
    model = NoMask(seed=9, eos_bias=1.0)
    options = {"num_beams": 2, "max_new_tokens": 5, "eos_token_id": EOS, "min_new_tokens": 3,
               "return_dict_in_generate": True}
    batch = generate_ids(model, [[EOS, 2, 4], PROMPT], attention_mask=[[0, 1, 1], [1, 1, 1]], **options)
    for row, prompt in enumerate(([2, 4], PROMPT)):
        alone = generate_ids(model, [prompt], **options)
        new = alone.sequences[0, len(prompt):].tolist()
        assert batch.sequences[row, 3:3 + len(new)].tolist() == new
        assert batch.sequences_scores[row] == pytest.approx(alone.sequences_scores[0], rel=1e-12)
        assert EOS not in new[:3]
    assert batch.beam_indices[1, 0] in (2, 3)           # the second prompt's beams are rows 2 and 3


# -- real models on their caches ------------------------------------------------------------
class Rerun(lamina.nn.Module):
    """The model, hidden from module traversal: no cache is found, so generation reruns."""

    def __init__(self, inner):
        super().__init__()
        self._hidden = (inner,)

    def forward(self, ids, key_mask=None, position_ids=None):
        return self._hidden[0](ids, key_mask=key_mask, position_ids=position_ids)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


MODES = [
    {"num_beams": 3, "num_return_sequences": 2},
    {"num_beams": 3, "early_stopping": True},
    {"num_beams": 2, "early_stopping": "never", "length_penalty": 2.0},
    {"num_beams": 3, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 2},
    {"num_beams": 2, "do_sample": True, "top_k": 5, "temperature": 1.5, "seed": 1},
    {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "num_return_sequences": 2},
]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_real_models_search_the_same_on_their_caches_as_by_rerunning(f64, kind):
    vocab = 11
    if kind == "gpt2":
        model = models.GPT2(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                            resid_pdrop=0.0, attn_pdrop=0.0)
    else:
        model = models.llama("tiny", vocab_size=vocab, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                             num_key_value_heads=1)
    model.eval()
    greedy = model.generate([PROMPT], max_new_tokens=3)
    eos = int(greedy[0, -1])                        # a token the model reaches
    ids = np.array([PROMPT, [0, 7, 2]])
    mask = np.array([[1, 1, 1], [0, 1, 1]])
    for options in MODES:
        cached = generate_ids(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos,
                              return_dict_in_generate=True, **options)
        rerun = generate_ids(Rerun(model), ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos,
                             return_dict_in_generate=True, **options)
        np.testing.assert_array_equal(cached.sequences, rerun.sequences)
        np.testing.assert_allclose(cached.sequences_scores, rerun.sequences_scores, rtol=1e-9)


def test_beam_options_are_checked():
    model = PrefixModel()
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
        generate_ids(model, [PROMPT], num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="num_return_sequences=3 exceeds num_beams=2"):
        generate_ids(model, [PROMPT], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="num_beams=3 must split into num_beam_groups=2"):
        generate_ids(model, [PROMPT], num_beams=3, num_beam_groups=2)
    with pytest.raises(ValueError, match="diversity_penalty=1.0 needs num_beam_groups > 1"):
        generate_ids(model, [PROMPT], num_beams=2, diversity_penalty=1.0)
    with pytest.raises(ValueError, match="does not sample"):
        generate_ids(model, [PROMPT], num_beams=4, num_beam_groups=2, do_sample=True)
    with pytest.raises(ValueError, match="only 2 tokens have a nonzero probability"):
        generate_ids(model, [PROMPT], num_beams=2, do_sample=True, top_k=2)
