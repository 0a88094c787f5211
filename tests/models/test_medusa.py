"""Medusa heads, candidate trees and greedy tree verification (lamina.models.medusa)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.autograd import no_grad, tensor
from lamina.nn import MultiHeadAttention
from lamina.text import caching_keys_values


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _gpt2(seed: int, vocab: int = 7, layers: int = 2, embd: int = 8, heads: int = 2, positions: int = 64):
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=vocab, n_positions=positions, n_embd=embd, n_layer=layers, n_head=heads,
                        embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    return model


def _llama(seed: int):
    lamina.manual_seed(seed)
    model = models.Llama(vocab_size=7, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model.build((None, 1))
    return model


MODELS = {"gpt2": _gpt2, "llama": _llama}


def _lm_head(model) -> np.ndarray:
    return model.wte.weight.numpy().T if isinstance(model, models.GPT2) else model.lm_head.weight.numpy()


def _random_heads(model, num_heads: int, seed: int, scale: float = 2.0):
    """Heads whose guesses are sometimes right and sometimes wrong: the LM head plus noise."""
    hidden = model.n_embd if isinstance(model, models.GPT2) else model.hidden_size
    heads = models.MedusaHeads(hidden, model.vocab_size, num_heads, num_layers=1)
    heads.load_lm_head(_lm_head(model))
    rng = np.random.default_rng(seed)
    heads.block_weight.data = rng.normal(scale=scale, size=heads.block_weight.shape)
    heads.block_bias.data = rng.normal(scale=scale, size=heads.block_bias.shape)
    return heads


# -- trees -----------------------------------------------------------------------------------
def test_tree_mask_and_positions_equal_a_hand_built_example():
    tree = models.medusa_tree([(1, 0), (0,), (0, 1), (1,), (0, 0)])
    assert tree.paths == ((), (0,), (1,), (0, 0), (0, 1), (1, 0))
    np.testing.assert_array_equal(tree.parent, [-1, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(tree.depth, [0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(tree.rank, [0, 0, 1, 0, 1, 0])
    assert tree.top == (2, 2)
    expected = np.array([[1, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0],
                         [1, 0, 1, 0, 0, 0],
                         [1, 1, 0, 1, 0, 0],
                         [1, 1, 0, 0, 1, 0],
                         [1, 0, 1, 0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(tree.mask, expected)
    full = tree.attention_mask(3)
    assert full.shape == (6, 9) and full[:, :3].all()
    np.testing.assert_array_equal(full[:, 3:], expected)
    np.testing.assert_array_equal(tree.position_ids(3), [3, 4, 4, 5, 5, 5])
    cart = models.cartesian_tree([2, 3])
    assert len(cart) == 1 + 2 + 6 and cart.top == (2, 3)
    with pytest.raises(ValueError, match=r"medusa_tree: the path \(1, 0\) has no parent \(1,\)"):
        models.medusa_tree([(0,), (1, 0)])


# -- verification --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_one_tree_pass_gives_each_node_the_logits_of_its_own_path(f64, kind):
    model = MODELS[kind](0)
    model.eval()
    prompt = np.array([3, 1, 4, 1])
    tree = models.cartesian_tree([2, 2, 1])
    node_tokens = np.random.default_rng(1).integers(0, 7, size=len(tree))
    with no_grad(), caching_keys_values(model):
        model(tensor(prompt[None]))
        hidden = model.hidden_states(tensor(node_tokens[None]), position_ids=tree.position_ids(4)[None],
                                     mask=tree.attention_mask(4))
        tree_logits = model.logits(hidden).numpy()[0]
    with no_grad():
        for i, path in enumerate(tree.paths):
            nodes = [i]
            while tree.parent[nodes[-1]] >= 0:
                nodes.append(int(tree.parent[nodes[-1]]))
            ids = np.concatenate([prompt, node_tokens[nodes[::-1]]])
            assert len(nodes) == len(path) + 1
            np.testing.assert_allclose(tree_logits[i], model(tensor(ids[None])).numpy()[0, -1], rtol=0, atol=1e-10)


def _cache(model):
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    return [(m._cached_keys.copy(), m._cached_values.copy(), m.cached_steps) for m in layers]


@pytest.mark.parametrize("kind, seed, tree", [("gpt2", 0, None), ("gpt2", 1, [(0,), (1,), (0, 0), (1, 0), (0, 0, 0)]),
                                              ("gpt2", 2, models.cartesian_tree([3, 2, 2])),
                                              ("llama", 3, models.cartesian_tree([3, 2]))])
def test_greedy_medusa_equals_greedy_generate_and_builds_the_same_cache(f64, kind, seed, tree):
    model = MODELS[kind](seed)
    heads = _random_heads(model, 3, seed)
    prompt = np.array([1, 5, 2])
    plain = model.generate(prompt[None], max_new_tokens=15, do_sample=False)[0, 3:]
    out = models.medusa_generate(model, heads, prompt, 15, tree=tree)
    np.testing.assert_array_equal(out.tokens, plain)
    assert sum(out.accepted) + 1 >= 15 and 1 <= out.mean_accepted_length
    model.eval()
    with no_grad(), caching_keys_values(model):
        again = models.medusa_decode(model, heads, prompt, 15, tree=tree)
        committed = 3 + len(again.tokens) - 1
        medusa_cache = _cache(model)
    with no_grad(), caching_keys_values(model):
        text = np.concatenate([prompt, again.tokens[:-1]])
        for step in range(len(text)):                   # plain decoding: one token per call
            model(tensor(text[None, step:step + 1]))
        plain_cache = _cache(model)
    for (k1, v1, s1), (k2, v2, s2) in zip(medusa_cache, plain_cache, strict=True):
        assert s1 == s2 == committed
        np.testing.assert_allclose(k1, k2, rtol=0, atol=1e-10)
        np.testing.assert_allclose(v1, v2, rtol=0, atol=1e-10)


def test_medusa_generate_stops_after_the_end_token_and_checks_its_inputs(f64):
    model = _gpt2(3)
    heads = _random_heads(model, 2, 3)
    prompt = np.array([2, 2])
    plain = model.generate(prompt[None], max_new_tokens=12, do_sample=False)[0, 2:]
    eos = int(plain[4])
    out = models.medusa_generate(model, heads, prompt, 12, eos_token_id=eos)
    np.testing.assert_array_equal(out.tokens, plain[:list(plain).index(eos) + 1])
    short = _gpt2(4, positions=12)          # a context the tree would overrun: the last trees are pruned
    plain = short.generate(prompt[None], max_new_tokens=10, do_sample=False)[0, 2:]
    out = models.medusa_generate(short, _random_heads(short, 2, 4), prompt, 10, tree=models.cartesian_tree([3, 3]))
    np.testing.assert_array_equal(out.tokens, plain)
    with pytest.raises(ValueError, match="the tree is 3 deep and there are 2 heads"):
        models.medusa_generate(model, heads, prompt, 4, tree=models.cartesian_tree([1, 1, 1]))
    with pytest.raises(TypeError, match="must offer hidden_states"):
        models.medusa_generate(lamina.nn.Dense(3), heads, prompt, 4)


def test_cache_refuses_a_tree_mask_of_the_wrong_width(f64):
    model = _gpt2(0)
    model.eval()
    with no_grad(), caching_keys_values(model):
        model(tensor(np.array([[1, 2]])))
        with pytest.raises(lamina.ShapeError, match=r"mask of shape \(3, 4\); expected \(3, 5\)"):
            model.hidden_states(tensor(np.array([[1, 2, 3]])), mask=np.ones((3, 4), dtype=bool))
        attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
        assert all(m.cached_steps == 2 for m in attention)
        with pytest.raises(ValueError, match=r"keep_cache_steps takes increasing step indices in \[0, 2\)"):
            attention[0].keep_cache_steps([1, 0])


# -- heads and loss ---------------------------------------------------------------------------
def _torch_heads_loss(h, ids, w, b, u, lambdas):
    n, t, _ = h.shape
    total = 0.0
    for k in range(w.shape[0]):
        x = h
        for layer in range(w.shape[1]):
            x = x + torch.nn.functional.silu(x @ w[k, layer] + b[k, layer])
        logits = x @ u[k]
        steps = t - k - 2
        total = total + lambdas[k] * torch.nn.functional.cross_entropy(
            logits[:, :steps].reshape(n * steps, -1), ids[:, k + 2:].reshape(-1))
    return total


def test_heads_loss_and_gradients_equal_a_torch_rewrite(f64):
    heads = models.MedusaHeads(6, 5, 3, num_layers=2)
    rng = np.random.default_rng(0)
    for p in (heads.block_weight, heads.block_bias, heads.out_weight):
        p.data = rng.normal(size=p.shape)
    h = rng.normal(size=(2, 7, 6))
    ids = rng.integers(0, 5, size=(2, 7))
    h_l = tensor(h, requires_grad=True)
    scores = heads(h_l)
    assert scores.shape == (2, 7, 3, 5)
    loss = models.medusa_loss(scores, ids, decay=0.7)
    loss.backward()
    torch_params = [torch.tensor(p.data, requires_grad=True)
                    for p in (heads.block_weight, heads.block_bias, heads.out_weight)]
    h_t = torch.tensor(h, requires_grad=True)
    expected = _torch_heads_loss(h_t, torch.tensor(ids), *torch_params, [1.0, 0.7, 0.49])
    expected.backward()
    np.testing.assert_allclose(float(loss.numpy()), expected.item(), rtol=1e-12)
    for ours, theirs in zip((heads.block_weight, heads.block_bias, heads.out_weight, h_l),
                            (*torch_params, h_t), strict=True):
        np.testing.assert_allclose(ours.grad.numpy() if hasattr(ours.grad, "numpy") else ours.grad,
                                   theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert check_gradients(lambda x: models.medusa_loss(heads(x), ids[:, :4]), h[:, :4])
    with pytest.raises(ValueError, match="medusa_loss: 2 weights for 3 heads"):
        models.medusa_loss(scores, ids, weights=[1.0, 0.5])


def test_fresh_heads_repeat_the_lm_head_and_round_trip_through_a_config(f64):
    model = _gpt2(4)
    heads = models.MedusaHeads(8, 7, 2, num_layers=1)
    heads.load_lm_head(model.wte.weight.numpy().T)
    h = np.random.default_rng(0).normal(size=(1, 3, 8))
    scores = heads(h).numpy()
    lm = model.logits(tensor(h)).numpy()
    for k in range(2):
        np.testing.assert_allclose(scores[:, :, k], lm, atol=1e-12)
    copy = lamina.nn.layer_from_config(lamina.nn.layer_to_config(heads))
    assert copy.get_config() == heads.get_config()
    with pytest.raises(ValueError, match=r"load_lm_head takes a \(8, 7\) matrix"):
        heads.load_lm_head(np.zeros((7, 8)))


# -- learning --------------------------------------------------------------------------------
def test_trained_heads_accept_several_tokens_per_call_where_untrained_ones_accept_one():
    """A language where each token determines the next (a fixed cycle through the vocabulary):
    a GPT-2 learns it, heads trained with the model frozen guess 2 and 3 tokens ahead."""
    vocab, length = 8, 12
    cycle = np.random.default_rng(0).permutation(vocab)
    after = np.empty(vocab, dtype=np.int64)
    after[cycle] = np.roll(cycle, -1)

    def _row(rng):
        row = [int(rng.integers(0, vocab))]
        for _ in range(length - 1):
            row.append(int(after[row[-1]]))
        return np.array(row)

    def batch(rng, n=16):
        return np.stack([_row(rng) for _ in range(n)])

    rng = np.random.default_rng(1)
    model = _gpt2(5, vocab=vocab, layers=1, embd=16)
    opt = optim.Adam(model, lr=0.02)
    for _ in range(60):
        ids = batch(rng)
        loss = F.categorical_cross_entropy(model(ids[:, :-1]), ids[:, 1:], from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    heads = models.MedusaHeads(16, vocab, 2)
    heads.load_lm_head(model.wte.weight.numpy().T)
    tree = models.cartesian_tree([1, 1])
    prompts = [_row(np.random.default_rng(10 + i))[:3] for i in range(4)]
    untrained = np.mean([models.medusa_generate(model, heads, p, 22, tree).mean_accepted_length for p in prompts])
    model.eval()
    head_opt = optim.Adam(heads, lr=0.02)
    for _ in range(60):
        ids = batch(rng)
        with no_grad():
            hidden = model.hidden_states(tensor(ids)).numpy()
        loss = models.medusa_loss(heads(hidden), ids)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
    trained = np.mean([models.medusa_generate(model, heads, p, 22, tree).mean_accepted_length for p in prompts])
    for p in prompts:
        plain = model.generate(p[None], max_new_tokens=22, do_sample=False)[0, 3:]
        np.testing.assert_array_equal(models.medusa_generate(model, heads, p, 22, tree).tokens, plain)
    assert untrained < 1.3 and trained > 2.4, (untrained, trained)


def test_readme_medusa_example_runs():
    printed, names = run_readme_section("Medusa heads: several tokens per call")
    out, model, ids = names["out"], names["model"], names["ids"]
    assert out.mean_accepted_length > 2.0 and printed.strip().endswith(str(out.mean_accepted_length))
    np.testing.assert_array_equal(out.tokens, model.generate(ids[:1, :3], max_new_tokens=12, do_sample=False)[0, 3:])
