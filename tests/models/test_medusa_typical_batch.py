"""Medusa's typical acceptance and batched decoding (lamina.models.medusa, lamina.models.medusa_batch)."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import scipy.special
import scipy.stats

import lamina
from helpers import README, run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.autograd import no_grad, tensor


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _gpt2(seed: int, vocab: int = 7, embd: int = 8, layers: int = 2, positions: int = 64):
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=vocab, n_positions=positions, n_embd=embd, n_layer=layers, n_head=2,
                        embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    return _sharpened(model)


def _sharpened(model, scale: float = 15.0):
    """The weight matrices scaled up: attention far from uniform, so every token read matters."""
    for p in model.parameters():
        if p.ndim == 2:
            p.data = p.data * scale
    return model


def _llama(seed: int):
    lamina.manual_seed(seed)
    model = models.Llama(vocab_size=7, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model.build((None, 1))
    return _sharpened(model)


MODELS = {"gpt2": _gpt2, "llama": _llama}


def _heads(model, num_heads: int, seed: int, scale: float):
    """The LM head plus noise: guesses sometimes right, sometimes wrong."""
    gpt2 = isinstance(model, models.GPT2)
    heads = models.MedusaHeads(model.n_embd if gpt2 else model.hidden_size, model.vocab_size, num_heads)
    heads.load_lm_head(model.wte.weight.numpy().T if gpt2 else model.lm_head.weight.numpy())
    rng = np.random.default_rng(seed)
    heads.block_weight.data = rng.normal(scale=scale, size=heads.block_weight.shape)
    heads.block_bias.data = rng.normal(scale=scale, size=heads.block_bias.shape)
    return heads


# -- the rule ----------------------------------------------------------------------------------
def _reference_rule(logits, tokens, temperature, epsilon, delta):
    """p(x) > min(epsilon, delta exp(-H(p))), row by row with SciPy's softmax and entropy."""
    out = []
    for z, x in zip(logits, tokens, strict=True):
        p = scipy.special.softmax(z / temperature)
        threshold = min(epsilon, delta * np.exp(-scipy.stats.entropy(p)))
        out.append(p[x] > threshold)
    return np.array(out)


def test_typical_rule_equals_a_scipy_reference_in_both_regimes():
    rng = np.random.default_rng(0)
    flat = rng.normal(scale=0.3, size=(40, 6))        # high entropy: delta exp(-H) is the smaller
    peaked = rng.normal(scale=4.0, size=(40, 6))      # low entropy: the epsilon cap
    logits = np.concatenate([flat, peaked])
    tokens = rng.integers(0, 6, size=80)
    for temperature, epsilon, delta in [(1.0, 0.09, 0.3), (0.7, 0.2, 0.5), (1.5, 0.05, None)]:
        d = np.sqrt(epsilon) if delta is None else delta
        got = models.typical_acceptance(logits, tokens, temperature, epsilon, delta)
        np.testing.assert_array_equal(got, _reference_rule(logits, tokens, temperature, epsilon, d))
        assert 0 < got.sum() < 80
    entropy = scipy.stats.entropy(scipy.special.softmax(logits, axis=1), axis=1)
    capped = 0.3 * np.exp(-entropy) > 0.09
    assert capped[40:].sum() > 10 and (~capped[:40]).all()    # both thresholds occur
    # by hand: p = (0.5, 0.25, 0.25), H = 1.5 log 2, delta exp(-H) = 0.3 / 2^1.5 = 0.1061 > epsilon 0.09
    z = np.log([[0.5, 0.25, 0.25]] * 3)
    np.testing.assert_array_equal(models.typical_acceptance(z, [0, 1, 2], 1.0, 0.09), [True, True, True])
    np.testing.assert_array_equal(models.typical_acceptance(z, [0, 1, 2], 1.0, 0.3, 1.0), [True, False, False])
    # uniform over 4: threshold min(0.09, 0.3 / 4 = 0.075); 0.25 passes, a 0.05 token does not
    z = np.log([[0.25] * 4, [0.05, 0.95 / 3, 0.95 / 3, 0.95 / 3]])
    np.testing.assert_array_equal(models.typical_acceptance(z, [3, 0], 1.0, 0.09), [True, False])


def test_typical_rule_at_temperature_zero_is_the_argmax_and_tiny_epsilon_keeps_every_possible_token():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 5))
    tokens = rng.integers(0, 5, size=30)
    np.testing.assert_array_equal(models.typical_acceptance(logits, tokens, 0.0), tokens == logits.argmax(1))
    logits[:, 4] = -np.inf                          # probability 0: never accepted
    for epsilon, delta in [(1e-300, None), (0.5, 0.0)]:        # threshold -> 0
        np.testing.assert_array_equal(models.typical_acceptance(logits, tokens, 1.0, epsilon, delta), tokens != 4)
    with pytest.raises(ValueError, match="typical_acceptance: expected logits"):
        models.typical_acceptance(logits, tokens[:3])
    with pytest.raises(ValueError, match=r"needs temperature >= 0, epsilon > 0"):
        models.typical_acceptance(logits, tokens, epsilon=0.0)


# -- single-prompt decoding ------------------------------------------------------------------
@pytest.mark.parametrize("kind, seed, scale", [("gpt2", 2, 0.5), ("llama", 1, 1.0)])
def test_typical_at_temperature_zero_equals_greedy_medusa_and_greedy_decoding(f64, kind, seed, scale):
    model = MODELS[kind](seed)
    heads = _heads(model, 3, seed, scale)
    prompt = np.array([1, 5, 2])
    tree = models.cartesian_tree([2, 2, 1])
    plain = model.generate(prompt[None], max_new_tokens=14, do_sample=False)[0, 3:]
    greedy = models.medusa_generate(model, heads, prompt, 14, tree=tree)
    typical = models.medusa_generate(model, heads, prompt, 14, tree=tree, acceptance="typical", temperature=0.0,
                                     seed=5)
    np.testing.assert_array_equal(greedy.tokens, plain)
    np.testing.assert_array_equal(typical.tokens, plain)
    assert typical.accepted == greedy.accepted and max(greedy.accepted) > 1
    with pytest.raises(ValueError, match="acceptance must be 'greedy' or 'typical'"):
        models.medusa_generate(model, heads, prompt, 4, acceptance="nucleus")


def _ancestral(model, prompt, steps, temperature, rng):
    """Plain sampling, one draw of softmax(z / T) per token with ``rng``."""
    ids = list(prompt)
    with no_grad():
        for _ in range(steps):
            z = model(tensor(np.array([ids]))).numpy()[0, -1] / temperature
            p = np.exp(z - z.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return np.array(ids[len(prompt):])


def test_typical_decoding_is_seeded_and_without_accepted_guesses_is_plain_sampling(f64):
    model = _gpt2(3)
    heads = _heads(model, 2, 3, scale=0.5)
    prompt = np.array([2, 6])
    first = models.medusa_generate(model, heads, prompt, 16, acceptance="typical", temperature=1.0, seed=7)
    again = models.medusa_generate(model, heads, prompt, 16, acceptance="typical", temperature=1.0,
                                   seed=np.random.default_rng(7))
    other = models.medusa_generate(model, heads, prompt, 16, acceptance="typical", temperature=1.0, seed=8)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert first.accepted == again.accepted and not np.array_equal(first.tokens, other.tokens)
    # epsilon = 1, delta >= V: the threshold is 1, no guess passes, every call keeps its one drawn token
    none = models.medusa_generate(model, heads, prompt, 12, acceptance="typical", temperature=0.8, epsilon=1.0,
                                  delta=100.0, seed=3)
    assert none.accepted == [1] * 11
    np.testing.assert_array_equal(none.tokens, _ancestral(model, prompt, 12, 0.8, np.random.default_rng(3)))
    # threshold -> 0: every guess has some probability, so each call keeps the whole depth of the tree
    every = models.medusa_generate(model, heads, prompt, 13, tree=models.cartesian_tree([2, 1]),
                                   acceptance="typical", temperature=1.0, epsilon=1e-300, seed=3)
    assert every.accepted == [3, 3, 3, 3], every.accepted


# -- batches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, tree", [("gpt2", models.cartesian_tree([2, 2, 1])),
                                        ("llama", [(0,), (1,), (0, 0), (1, 0), (0, 0, 0)])])
def test_batch_of_three_prompts_equals_three_single_decodes(f64, kind, tree):
    model = MODELS[kind](0)
    heads = _heads(model, 3, 0, scale=0.5 if kind == "gpt2" else 0.2)
    prompts = [np.array([1, 5, 2]), np.array([4]), np.array([3, 3, 0, 6, 2, 1])]
    outs = models.medusa_generate_batch(model, heads, prompts, 15, tree=tree)
    assert len(outs) == 3
    for prompt, out in zip(prompts, outs, strict=True):
        alone = models.medusa_generate(model, heads, prompt, 15, tree=tree)
        np.testing.assert_array_equal(out.tokens, alone.tokens)
        assert out.accepted == alone.accepted
    lengths = [len(out.accepted) for out in outs]
    assert max(max(out.accepted) for out in outs) > 1 and len(set(lengths)) > 1, [o.accepted for o in outs]


def test_batch_rows_stop_at_their_end_token_and_near_the_context_end(f64):
    model = _gpt2(1)
    heads = _heads(model, 2, 1, scale=0.5)
    prompts = [np.array([2, 2]), np.array([5, 1, 0, 3]), np.array([6])]
    plain = [model.generate(p[None], max_new_tokens=12, do_sample=False)[0, len(p):] for p in prompts]
    eos = int(plain[0][3])
    outs = models.medusa_generate_batch(model, heads, prompts, 12, eos_token_id=eos)
    for prompt, out, full in zip(prompts, outs, plain, strict=True):
        cut = list(full).index(eos) + 1 if eos in full else len(full)
        np.testing.assert_array_equal(out.tokens, full[:cut])
        assert out.accepted == models.medusa_generate(model, heads, prompt, 12, eos_token_id=eos).accepted
    assert min(len(out.tokens) for out in outs) < 12
    short = _gpt2(4, positions=13)                 # the rows reach the 13 positions at different calls
    heads = _heads(short, 2, 4, scale=0.5)
    tree = models.cartesian_tree([3, 3])
    outs = models.medusa_generate_batch(short, heads, [np.array([1, 2, 3]), np.array([4])], 10, tree=tree)
    for prompt, out in zip([np.array([1, 2, 3]), np.array([4])], outs, strict=True):
        np.testing.assert_array_equal(out.tokens, short.generate(prompt[None], max_new_tokens=10,
                                                                 do_sample=False)[0, len(prompt):])
    np.testing.assert_array_equal(models.medusa_generate_batch(model, heads, np.array([[1, 2], [3, 4]]), 3)[1].tokens,
                                  models.medusa_generate(model, heads, np.array([3, 4]), 3).tokens)
    with pytest.raises(ValueError, match=r"an array of prompts must be \(N, T\), got \(3,\)"):
        models.medusa_generate_batch(model, heads, np.array([1, 2, 3]), 3)
    with pytest.raises(ValueError, match="each of >= 1 token"):
        models.medusa_generate_batch(model, heads, [np.array([1]), np.array([], dtype=np.int64)], 3)


def test_seeded_typical_batch_is_reproducible(f64):
    model = _gpt2(5)
    heads = _heads(model, 2, 5, scale=0.5)
    prompts = [np.array([1, 2]), np.array([3, 4, 5])]
    runs = [models.medusa_generate_batch(model, heads, prompts, 10, acceptance="typical", temperature=1.0, seed=s)
            for s in (11, 11, 12)]
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        assert a.accepted == b.accepted
    assert any(not np.array_equal(a.tokens, c.tokens) for a, c in zip(runs[0], runs[2], strict=True))


# -- learning --------------------------------------------------------------------------------
def test_trained_heads_keep_more_than_one_token_per_call_under_typical_acceptance():
    """A cycle through the vocabulary that a GPT-2 learns; heads trained with it frozen."""
    vocab, length = 8, 12
    cycle = np.random.default_rng(0).permutation(vocab)
    after = np.empty(vocab, dtype=np.int64)
    after[cycle] = np.roll(cycle, -1)
    rng = np.random.default_rng(1)

    def batch(n=16):
        rows = [rng.integers(0, vocab, n)]
        for _ in range(length - 1):
            rows.append(after[rows[-1]])
        return np.stack(rows, axis=1)

    model = _gpt2(5, vocab=vocab, embd=16, layers=1)
    opt = optim.Adam(model, lr=0.02)
    for _ in range(60):
        ids = batch()
        loss = F.categorical_cross_entropy(model(ids[:, :-1]), ids[:, 1:], from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    heads = models.MedusaHeads(16, vocab, 2)
    heads.load_lm_head(model.wte.weight.numpy().T)
    prompts = [batch(1)[0, :3 + i] for i in range(3)]
    untrained = models.medusa_generate_batch(model, heads, prompts, 16, acceptance="typical", temperature=0.7, seed=0)
    head_opt = optim.Adam(heads, lr=0.02)
    for _ in range(60):
        ids = batch()
        with no_grad():
            hidden = model.hidden_states(tensor(ids)).numpy()
        loss = models.medusa_loss(heads(hidden), ids)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
    outs = models.medusa_generate_batch(model, heads, prompts, 16, acceptance="typical", temperature=0.7, seed=0)
    mean = np.mean([out.mean_accepted_length for out in outs])
    single = models.medusa_generate(model, heads, prompts[0], 16, acceptance="typical", temperature=0.7, seed=0)
    before = np.mean([out.mean_accepted_length for out in untrained])
    assert before < 2.0 and mean > 2.5, (before, mean)
    assert single.mean_accepted_length > 2.5, single.accepted


def _second_block(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + 4)
    return re.findall(r"```python\n(.*?)```", text[start:end.start()], re.S)[1]


def test_readme_typical_acceptance_example_runs():
    title = "Medusa heads: several tokens per call"
    _, names = run_readme_section(title)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_second_block(title), "README.md", "exec"), names)
    typical, batch, model, ids = names["typical"], names["batch"], names["model"], names["ids"]
    assert typical.mean_accepted_length > 2.0 and all(b.mean_accepted_length > 2.0 for b in batch)
    assert printed.getvalue().split()[0] == str(typical.mean_accepted_length)
    for row, out in zip((ids[1, :2], ids[2, :5]), batch, strict=True):
        plain = model.generate(row[None], max_new_tokens=12, do_sample=False)[0, len(row):]
        np.testing.assert_array_equal(out.tokens, plain)
