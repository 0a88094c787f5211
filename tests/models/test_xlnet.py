"""XLNet: the permutation masks and partial prediction equal loop references built from the
order; with the identity order the content stream equals a causal Transformer-XL layer with
the same weights; the query stream at a position ignores its own token and depends on the
tokens before it in the order (perturbations); the two-stream attention equals a float64 torch
rewrite that gathers each signed distance explicitly, in values and gradients; a float64
gradient check; the save/load round trip; permutation training predicts a token from both of
its sides where left-to-right training cannot; the README example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina import models
from lamina.nn.functional_call import functional_call

_PARAMS = ("qkv_weight", "r_weight", "out_weight", "r_w_bias", "r_r_bias")
_ORDERS = np.array([[2, 0, 3, 1], [3, 2, 1, 0]])


def _loop_masks(order: list[int], mem_len: int) -> tuple[np.ndarray, np.ndarray]:
    t = len(order)
    content = np.zeros((t, mem_len + t), bool)
    query = np.zeros((t, mem_len + t), bool)
    for i in range(t):
        content[i, :mem_len] = query[i, :mem_len] = True
        for j in range(t):
            content[i, mem_len + j] = order.index(j) <= order.index(i)
            query[i, mem_len + j] = order.index(j) < order.index(i)
    return content, query


@pytest.mark.parametrize("mem_len", [0, 2])
def test_permutation_masks_equal_a_loop_reference(mem_len):
    orders = np.stack([np.random.default_rng(s).permutation(6) for s in range(3)])
    content, query = models.permutation_masks(orders, mem_len=mem_len)
    assert content.shape == query.shape == (3, 6, mem_len + 6)
    for n, order in enumerate(orders.tolist()):
        expected_content, expected_query = _loop_masks(order, mem_len)
        assert np.array_equal(content[n], expected_content) and np.array_equal(query[n], expected_query)
    single = models.permutation_masks(orders[0], mem_len=mem_len)
    assert np.array_equal(single[0], content[0]) and np.array_equal(single[1], query[0])
    identity_content, identity_query = models.permutation_masks(np.arange(4))
    assert np.array_equal(identity_content, np.tril(np.ones((4, 4), bool)))
    assert np.array_equal(identity_query, np.tril(np.ones((4, 4), bool), -1))


@pytest.mark.parametrize("k", [1, 2, 3, 6.0])
def test_partial_prediction_keeps_the_last_part_of_each_order(k):
    orders = models.sample_factorization_order(4, 6, rng=1)
    assert sorted(orders[0].tolist()) == list(range(6))
    mask = models.partial_prediction_mask(orders, k)
    count = max(1, int(6 // k))
    for n, order in enumerate(orders.tolist()):
        expected = np.zeros(6, bool)
        expected[order[6 - count:]] = True
        assert np.array_equal(mask[n], expected)


def _two_stream(d_model=6, num_heads=2, d_head=3):
    layer = models.TwoStreamRelativeAttention(d_model, num_heads, d_head=d_head)
    layer(np.zeros((1, 2, d_model), np.float32))
    return layer


def _params(layer, seed=1):
    return [randn(*getattr(layer, name).shape, seed=seed + i, scale=0.5) for i, name in enumerate(_PARAMS)]


def _torch_two_stream(h, g, memory, qkv_weight, r_weight, out_weight, u, v, num_heads, content_mask, query_mask):
    """Both streams' scores written out: (q_i + u) . k_j + (q_i + v) . W_R R_{i-j} with the
    sinusoid of every signed distance i - j (queries at M + i, keys at j) gathered one by one;
    a query that sees no key gets a zero output."""
    n, t, d_model = h.shape
    m = memory.shape[1]
    context = torch.cat([memory.detach(), h], dim=1)
    k_len = m + t
    width = qkv_weight.shape[1] // 3
    d_head = width // num_heads
    k = (context @ qkv_weight[:, width:2 * width]).reshape(n, k_len, num_heads, d_head)
    val = (context @ qkv_weight[:, 2 * width:]).reshape(n, k_len, num_heads, d_head)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    distance = m + torch.arange(t)[:, None] - torch.arange(k_len)[None, :]                  # (T, K), both signs
    angles = distance[..., None].to(torch.float64) * inv_freq
    projected = (torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1) @ r_weight).reshape(
        t, k_len, num_heads, d_head)

    def stream(x, mask):
        q = (x @ qkv_weight[:, :width]).reshape(n, t, num_heads, d_head)
        scores = (torch.einsum("nihd,njhd->nhij", q + u, k)
                  + torch.einsum("nihd,ijhd->nhij", q + v, projected)) / math.sqrt(d_head)
        allowed = torch.as_tensor(mask).reshape(-1, 1, t, k_len)
        sees_any = allowed.any(dim=-1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(~(allowed | ~sees_any), float("-inf")), dim=-1) * sees_any
        return torch.einsum("nhij,njhd->nihd", weights, val).reshape(n, t, width) @ out_weight

    return stream(h, content_mask), stream(g, query_mask)


def test_two_stream_attention_matches_a_torch_rewrite_in_values_and_gradients():
    layer = _two_stream()
    h, g, memory = randn(2, 4, 6, seed=0), randn(2, 4, 6, seed=8), randn(2, 3, 6, seed=9)
    content_mask, query_mask = models.permutation_masks(_ORDERS, mem_len=3)

    def ours(h, g, memory, *params):
        return functional_call(layer, dict(zip(_PARAMS, params)), h, g, memory, content_mask=content_mask,
                               query_mask=query_mask)

    def theirs(h, g, memory, *params):
        return _torch_two_stream(h, g, memory, *params, num_heads=2, content_mask=content_mask,
                                 query_mask=query_mask)

    compare_with_torch(ours, theirs, h, g, memory, *_params(layer), dtype=np.float64,
                       grad=[True, True, False, True, True, True, True, True])


def test_without_memory_the_first_query_of_the_order_gets_zeros_and_matches_torch():
    layer = _two_stream(d_model=4, num_heads=1, d_head=5)
    content_mask, query_mask = models.permutation_masks(_ORDERS[1])
    outputs = compare_with_torch(
        lambda h, g, *p: functional_call(layer, dict(zip(_PARAMS, p)), h, g, content_mask=content_mask,
                                         query_mask=query_mask),
        lambda h, g, *p: _torch_two_stream(h, g, h[:, :0], *p, num_heads=1, content_mask=content_mask,
                                           query_mask=query_mask),
        randn(1, 4, 4, seed=3), randn(1, 4, 4, seed=4), *_params(layer, seed=4), dtype=np.float64)
    assert not np.any(outputs[1].numpy()[:, 3]) and np.all(np.abs(outputs[1].numpy()[:, :3]).sum(-1) > 0)


def test_gradients_of_the_two_stream_attention_pass_a_float64_check():
    layer = _two_stream(d_model=4, num_heads=2, d_head=2)
    content_mask, query_mask = models.permutation_masks(np.array([[1, 2, 0], [0, 2, 1]]), mem_len=2)

    def fn(h, g, memory, *params):
        content, query = functional_call(layer, dict(zip(_PARAMS, params)), h, g, memory,
                                         content_mask=content_mask, query_mask=query_mask)
        return F.concat([content, query], axis=1)

    assert check_gradients(fn, randn(2, 3, 4, seed=5), randn(2, 3, 4, seed=6), randn(2, 2, 4, seed=7),
                           *_params(layer, seed=8), grad=[True, True, False, True, True, True, True, True])


def test_with_the_identity_order_the_content_stream_is_a_causal_transformer_xl_layer(f64):
    lamina.manual_seed(0)
    xlnet_layer, txl_layer = models.XLNetLayer(6, 2, 10, d_head=4), models.TransformerXLLayer(6, 2, 10, d_head=4)
    h, g, memory = randn(2, 5, 6, seed=1), randn(2, 5, 6, seed=2), randn(2, 3, 6, seed=3)
    xlnet_layer(h, g, memory)
    txl_layer(h, memory)
    state = {name: value + 0.1 * randn(*value.shape, seed=i) for i, (name, value) in
             enumerate(xlnet_layer.state_dict().items())}
    assert sorted(state) == sorted(txl_layer.state_dict())
    xlnet_layer.load_state_dict(state)
    txl_layer.load_state_dict(state)
    content, query = xlnet_layer(h, g, memory)
    assert_close(content.numpy(), txl_layer(h, memory).numpy(), 1e-10, "content stream")
    assert_close(xlnet_layer(h, None, memory).numpy(), content.numpy(), 0, "content stream alone")
    assert not np.allclose(query.numpy(), content.numpy())


def _model(seed=0, vocab=7, **options):
    lamina.manual_seed(seed)
    options = {"d_model": 8, "num_heads": 2, "num_layers": 2, "d_ff": 12, **options}
    return models.XLNetLM(vocab, **options)


def _ids(shape, seed=0, vocab=7):
    return np.random.default_rng(seed).integers(0, vocab, shape)


@pytest.mark.parametrize("mem_len", [0, 3])
def test_the_query_stream_sees_the_tokens_before_it_in_the_order_and_not_its_own(f64, mem_len):
    model = _model(mem_len=mem_len)
    mems = model(_ids((2, 3), seed=1))[1] if mem_len else None
    ids, orders = _ids((2, 4), seed=2), _ORDERS
    logits = model(ids, mems, perm_order=orders)[0].numpy()
    for n, order in enumerate(orders.tolist()):
        for step, position in enumerate(order):
            changed = ids.copy()
            changed[n, position] = (changed[n, position] + 1) % 7
            after = model(changed, mems, perm_order=orders)[0].numpy()[n]
            blind = order[:step + 1]                 # the position itself and those before it in the order
            assert_close(after[blind], logits[n, blind], 1e-12, f"rows {blind} after changing {position}")
            seeing = order[step + 1:]                # the positions that see it
            assert np.all(np.abs(after[seeing] - logits[n, seeing]).max(axis=-1) > 1e-6), (n, position)


def test_the_identity_order_is_left_to_right_language_modelling(f64):
    model = _model()
    ids = _ids((2, 5), seed=3)
    logits = model(ids)[0].numpy()
    assert_close(model(ids, perm_order=np.arange(5))[0].numpy(), logits, 0, "identity order")
    changed = ids.copy()
    changed[:, 2] = (changed[:, 2] + 3) % 7
    after = model(changed)[0].numpy()
    assert_close(after[:, :3], logits[:, :3], 1e-12, "rows up to the changed token")
    assert np.abs(after[:, 3:] - logits[:, 3:]).min() > 1e-6


def test_permutation_lm_loss_is_the_cross_entropy_at_the_targets(f64):
    model = _model()
    ids, orders = _ids((2, 4), seed=4), _ORDERS
    targets = models.partial_prediction_mask(orders, 2)
    loss = model.permutation_lm_loss(ids, orders, targets)
    logits = model(ids, perm_order=orders)[0].numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = [log_probs[n, i, ids[n, i]] for n, i in zip(*np.nonzero(targets))]
    assert len(picked) == 4 and abs(loss.item() + np.mean(picked)) < 1e-12
    loss.backward()
    assert np.any(model.mask_embedding.grad) and np.any(model.embeddings.weight.grad)


def test_memories_keep_the_last_content_steps_and_receive_no_gradient(f64):
    model = _model(mem_len=5)
    mems = [lamina.tensor(m.numpy(), requires_grad=True) for m in model(_ids((2, 3), seed=5))[1]]
    logits, new_mems = model(_ids((2, 4), seed=6), mems, perm_order=_ORDERS)
    F.mul(logits, logits).sum().backward()
    assert all(m.grad is None or not np.any(m.grad) for m in mems)
    assert [m.shape for m in new_mems] == [(2, 5, 8)] * 2 and not any(m.requires_grad for m in new_mems)
    assert_close(new_mems[0].numpy()[:, :1], mems[0].numpy()[:, 2:], 0, "memory carried over")


def test_save_and_load_round_trip(tmp_path):
    model = _model(mem_len=2, dropout=0.1)
    model.eval()
    ids = _ids((2, 4))
    logits, mems = model(ids, perm_order=_ORDERS)
    lamina.save(model, tmp_path / "xlnet.safetensors")
    twin = lamina.load(tmp_path / "xlnet.safetensors")
    twin.eval()
    assert type(twin) is models.XLNetLM and twin.get_config() == model.get_config()
    assert np.array_equal(twin(ids, perm_order=_ORDERS)[0].numpy(), logits.numpy())
    expected = model(ids, mems, perm_order=_ORDERS)[0].numpy()
    assert np.array_equal(twin(ids, mems, perm_order=_ORDERS)[0].numpy(), expected)


def test_errors_name_the_function_and_shapes():
    with pytest.raises(ValueError, match="permutation_masks.*permutation"):
        models.permutation_masks(np.array([0, 0, 1]))
    with pytest.raises(lamina.ShapeError, match="partial_prediction_mask"):
        models.partial_prediction_mask(np.zeros((2, 2, 2), int))
    layer = _two_stream()
    with pytest.raises(lamina.ShapeError, match="TwoStreamRelativeAttention.*query_mask"):
        layer(np.zeros((2, 3, 6), np.float32), np.zeros((2, 3, 6), np.float32), query_mask=np.ones((3, 4), bool))
    with pytest.raises(lamina.ShapeError, match="query stream"):
        layer(np.zeros((2, 3, 6), np.float32), np.zeros((2, 2, 6), np.float32))
    with pytest.raises(lamina.ShapeError, match="perm_order"):
        _model()(_ids((2, 3)), perm_order=np.arange(4))
    with pytest.raises(ValueError, match="selects no position"):
        _model().permutation_lm_loss(_ids((2, 3)), np.arange(3), np.zeros((2, 3), bool))


def _neighbour_sums(rng, n: int) -> np.ndarray:
    """(n, 3) sequences [a, 6 + a + b, 3 + b], a, b uniform in {0, 1, 2}: the middle token is the
    sum of its neighbours (the two sides drawn from separate thirds of the vocabulary)."""
    a, b = rng.integers(0, 3, n), rng.integers(0, 3, n)
    return np.stack([a, 6 + a + b, 3 + b], axis=1)


def _middle_loss(permute: bool, steps: int = 300, seed: int = 0) -> float:
    """Trains on random orders with partial prediction (``permute``) or left to right on every
    token; returns the loss of the middle token predicted after both of its neighbours (order
    [0, 2, 1]) for the permutation model, or from its left side for the left-to-right one."""
    model = _model(seed=seed, vocab=11, d_model=32, num_heads=2, num_layers=1, d_ff=64)
    rng = np.random.default_rng(seed)
    model(_neighbour_sums(rng, 1))
    optimizer = lamina.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        ids = _neighbour_sums(rng, 32)
        order = models.sample_factorization_order(32, 3, rng) if permute else np.arange(3)
        targets = models.partial_prediction_mask(order, 1.5) if permute else np.ones((32, 3), bool)
        model.zero_grad()
        model.permutation_lm_loss(ids, order, targets).backward()
        optimizer.step()
    middle = np.zeros((512, 3), bool)
    middle[:, 1] = True
    with lamina.no_grad():
        ids = _neighbour_sums(np.random.default_rng(99), 512)
        return model.permutation_lm_loss(ids, np.array([0, 2, 1]) if permute else np.arange(3), middle).item()


def test_permutation_training_predicts_a_token_from_both_sides():
    both_sides, left_to_right = _middle_loss(permute=True), _middle_loss(permute=False)
    assert left_to_right > 0.9 * math.log(3)                 # one neighbour leaves three sums equally likely
    assert both_sides < 0.25 * left_to_right


def test_readme_example_runs():
    printed, names = run_readme_section("XLNet: permutation language modelling")
    assert isinstance(names["model"], models.XLNetLM)
    assert printed.split()[:3] == ["(2,", "6,", "20)"] and float(printed.split()[3]) > 0
