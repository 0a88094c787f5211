"""nGPT: one block against a float64 torch rewrite of the paper's equations (values and every
gradient), the weights and hidden states on the unit sphere, the scaled factors, a tiny nGPT
and a tiny GPT-2 learning a copy-with-lag language, the README example and the errors."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, randn, run_readme_section
from lamina import functional as F
from lamina import models, nn, optim

D, HEADS, D_FF = 8, 2, 12


def _norm(x):
    return torch.nn.functional.normalize(x, dim=-1)


def _rope(x, base=10000.0):
    """RoPE on the two halves of the features (x1 cos - x2 sin, x1 sin + x2 cos)."""
    t, d = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * theta
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()], dim=-1)


def torch_ngpt_block(h, p, alpha_init=0.05):
    """The paper's block (eqs. 10-11, 15-16, 19-21), lamina's (in, out) weight layout."""
    n, t, d = h.shape
    d_k = d // HEADS
    base = 1.0 / math.sqrt(d)

    def split(x):
        return x.reshape(n, t, HEADS, d_k).transpose(1, 2)

    s_qk = (p["s_qk"] * (1.0 / base)).reshape(HEADS, 1, d_k)
    q = s_qk * _norm(_rope(split(h @ p["w_q"])))
    k = s_qk * _norm(_rope(split(h @ p["w_k"])))
    v = split(h @ p["w_v"])
    scores = q @ k.transpose(-1, -2) * math.sqrt(d_k)
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
    h_a = _norm(y @ p["w_o"])
    h = _norm(h + p["alpha_attn"] * (alpha_init / base) * (h_a - h))
    u = (h @ p["w_up"]) * p["s_u"]
    gate = (h @ p["w_gate"]) * p["s_v"] * math.sqrt(d)
    h_m = _norm((u * torch.nn.functional.silu(gate)) @ p["w_down"])
    return _norm(h + p["alpha_mlp"] * (alpha_init / base) * (h_m - h))


def _float64_block():
    lamina.manual_seed(0)
    block = models.NGPTBlock(D, HEADS, d_ff=D_FF)
    block.build((None, None, D))
    block.to(np.float64)
    rng = np.random.default_rng(1)
    for name in ("alpha_attn", "alpha_mlp", "s_qk", "s_u", "s_v"):       # move the factors off their init
        param = getattr(block, name)
        param.data = param.data * rng.uniform(0.5, 1.5, param.shape)
    return block


def test_a_block_matches_a_float64_torch_rewrite_of_the_paper_in_values_and_gradients():
    block = _float64_block()
    h0 = randn(2, 5, D)
    h0 /= np.linalg.norm(h0, axis=-1, keepdims=True)
    up = randn(2, 5, D, seed=3)
    x = lamina.tensor(h0, requires_grad=True, dtype=np.float64)
    out = block(x)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()
    params = {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in block.named_parameters()}
    x_t = torch.tensor(h0, requires_grad=True)
    out_t = torch_ngpt_block(x_t, params)
    (out_t * torch.tensor(up)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-10, "block output")
    assert_close(np.asarray(x.grad), x_t.grad.numpy(), 1e-9, "input gradient")
    assert len(params) == 12
    for name, param in block.named_parameters():
        assert_close(np.asarray(param.grad),
                     params[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_a_block_passes_a_float64_gradient_check():
    block = _float64_block()
    h0 = randn(1, 3, D, seed=4)
    h0 /= np.linalg.norm(h0, axis=-1, keepdims=True)
    assert lamina.gradcheck(block, lamina.tensor(h0, requires_grad=True, dtype=np.float64))


def _tiny_ngpt(vocab=8, d=32, seed=0):
    lamina.manual_seed(seed)
    return models.NGPT(vocab, d, n_layer=2, n_head=2, d_ff=4 * d // 3)


def _unit_along(a, axis):
    return np.allclose(np.linalg.norm(a, axis=axis), 1.0, atol=1e-5)


def test_normalize_weights_puts_every_matrix_and_hidden_state_on_the_sphere():
    model = _tiny_ngpt(d=8)
    ids = np.array([[1, 2, 3, 4, 5], [0, 7, 6, 5, 4]])
    model(ids)
    rng = np.random.default_rng(0)
    opt = optim.Adam(model.parameters(), lr=0.05)
    loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
    block = model.blocks[0]
    # the step moved them off the sphere
    assert not _unit_along(block.w_q.data, 0) and not _unit_along(model.embed.weight.data, 1)
    assert models.normalize_ngpt_weights(model) is model
    assert _unit_along(model.embed.weight.data, 1) and _unit_along(model.unembed.data, 1)
    for block in model.blocks:
        for name in ("w_q", "w_k", "w_v", "w_up", "w_gate"):
            assert _unit_along(getattr(block, name).data, 0), name          # columns along the embedding axis
        for name in ("w_o", "w_down"):
            assert _unit_along(getattr(block, name).data, 1), name          # rows along the embedding axis
    hidden = model.hidden_states(rng.integers(0, 8, (3, 6))).numpy()
    assert hidden.shape == (3, 6, 8) and _unit_along(hidden, -1)


def test_the_factors_are_used_as_stored_times_init_over_scale():
    model = _tiny_ngpt(d=16)
    model(np.array([[1, 2]]))
    block, base = model.blocks[0], 1 / 4.0
    assert np.allclose(block.alpha_attn.data, base) and np.allclose(block.alpha_a().numpy(), 0.05)
    assert np.allclose(block.alpha_m().numpy(), 0.05) and np.allclose(block.scale_qk().numpy(), 1.0)
    assert np.allclose(model.s_z.data, base) and np.allclose(model.scale_z().numpy(), 1.0)
    assert np.allclose(block.s_u.data, 1.0) and np.allclose(block.s_v.data, 1.0)


def test_config_round_trips_through_save_and_load(tmp_path):
    model = _tiny_ngpt(d=8)
    ids = np.array([[1, 2, 3]])
    expected = model(ids).numpy()
    lamina.save(model, tmp_path / "ngpt.safetensors")
    twin = lamina.load(tmp_path / "ngpt.safetensors")
    assert type(twin) is models.NGPT and twin.get_config() == model.get_config()
    assert np.array_equal(twin(ids).numpy(), expected)
    assert models.NGPTBlock in nn.registered_layers().values()


V, LAG, T = 8, 4, 16


def _lagged(rng, n=16):
    """Sequences whose every token repeats the one LAG steps back (the first LAG are random)."""
    return np.tile(rng.integers(0, V, (n, LAG)), (1, T // LAG))


def _copy_accuracy(model, renormalize, steps=60):
    rng = np.random.default_rng(0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        seq = _lagged(rng)
        loss = F.cross_entropy(model(seq[:, :-1])[:, LAG - 1:], seq[:, LAG:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if renormalize:
            models.normalize_ngpt_weights(model)
    seq = _lagged(np.random.default_rng(9), 64)
    with lamina.no_grad():
        predicted = np.argmax(model(seq[:, :-1]).numpy(), axis=-1)
    return float(np.mean(predicted[:, LAG - 1:] == seq[:, LAG:]))


def test_a_tiny_ngpt_and_a_tiny_gpt2_both_learn_a_copy_with_lag_language():
    ngpt = _tiny_ngpt()
    lamina.manual_seed(0)
    gpt2 = models.GPT2(V, n_positions=T, n_embd=32, n_layer=2, n_head=2, n_inner=64, embd_pdrop=0.0,
                       resid_pdrop=0.0, attn_pdrop=0.0)
    ngpt(np.zeros((1, 2), int))
    gpt2(np.zeros((1, 2), int))
    assert abs(ngpt.num_parameters() - gpt2.num_parameters()) < 0.1 * gpt2.num_parameters()
    # chance is 1/8; measured after 60 steps: 1.0 for both (GPT-2 gets to 0.9 ten steps sooner)
    assert _copy_accuracy(ngpt, renormalize=True) > 0.6
    assert _copy_accuracy(gpt2, renormalize=False) > 0.6


def test_readme_example_runs():
    printed, names = run_readme_section("Transformers without normalization: DyT and nGPT")
    assert "DyT" in printed and names["accuracy"] > 0.6


def test_errors_name_the_model():
    with pytest.raises(ValueError, match="NGPTBlock: d_model 6 must split into n_head 2 heads of an even size"):
        models.NGPTBlock(6, 2)
    with pytest.raises(ValueError, match="NGPTBlock: alpha_attn_init must be a positive finite number"):
        models.NGPTBlock(8, 2, alpha_attn_init=0)
    with pytest.raises(ValueError, match="normalize_ngpt_weights: .* holds no NGPT or NGPTBlock"):
        models.normalize_ngpt_weights(nn.Dense(3))
    block = models.NGPTBlock(8, 2)
    with pytest.raises(lamina.ShapeError, match=r"NGPTBlock: .*\(2, 3, 4\); expected \(batch, time, 8\)"):
        block(np.zeros((2, 3, 4), np.float32))
