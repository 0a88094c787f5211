"""Multi-token prediction (lamina.models.multi_token) and self-speculative decoding
(lamina.models.self_speculative): losses against a float64 PyTorch rewrite, gradient checks,
MTP's shapes and causal structure, greedy equality, saving and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, run_readme_section
from lamina import models
from lamina.autograd import no_grad, tensor
from lamina.nn import layer_from_config, layer_to_config

VOCAB, EMBD, HEADS = 7, 8, 2


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _gpt2(seed: int, layers: int = 1, positions: int = 64):
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=VOCAB, n_positions=positions, n_embd=EMBD, n_layer=layers, n_head=HEADS,
                        embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    return model


def _llama(seed: int):
    lamina.manual_seed(seed)
    model = models.Llama(vocab_size=VOCAB, hidden_size=EMBD, intermediate_size=12, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model.build((None, 1))
    return model


def _ids(n: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (n, t))


def _perturb(module, seed: int, scale: float = 0.3) -> None:
    """Move every weight off its initial value (LayerNorm scales away from 1, biases from 0)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + rng.normal(scale=scale, size=p.shape)).astype(p.data.dtype)


# -- a float64 PyTorch rewrite -------------------------------------------------------------------
def _t_block(x, p: dict, prefix: str, act) -> torch.Tensor:
    """A pre-norm causal Transformer layer: x + attention(norm1(x)), then x + mlp(norm2(x))."""
    n, t, e = x.shape
    d = e // HEADS
    h = TF.layer_norm(x, (e,), p[prefix + "norm1.weight"], p[prefix + "norm1.bias"], eps=1e-5)
    q, k, v = (h @ p[prefix + "self_attention.in_weight"] + p[prefix + "self_attention.in_bias"]).split(e, dim=-1)
    q, k, v = (z.reshape(n, t, HEADS, d).transpose(1, 2) for z in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, e)
    x = x + attended @ p[prefix + "self_attention.out_weight"] + p[prefix + "self_attention.out_bias"]
    h = TF.layer_norm(x, (e,), p[prefix + "norm2.weight"], p[prefix + "norm2.bias"], eps=1e-5)
    h = act(h @ p[prefix + "linear1.weight"] + p[prefix + "linear1.bias"])
    return x + h @ p[prefix + "linear2.weight"] + p[prefix + "linear2.bias"]


def _t_trunk(ids, p: dict) -> torch.Tensor:
    """A one-block GPT-2's final hidden states ln_f(block(W_te[x] + W_pe[t]))."""
    x = p["model.wte.weight"][ids] + p["model.wpe.weight"][: ids.shape[1]]
    x = _t_block(x, p, "model.h.0.", lambda z: TF.gelu(z, approximate="tanh"))
    return TF.layer_norm(x, (EMBD,), p["model.ln_f.weight"], p["model.ln_f.bias"], eps=1e-5)


def _t_ce(scores, targets) -> torch.Tensor:
    return TF.cross_entropy(scores.reshape(-1, scores.shape[-1]), targets.reshape(-1))


def _t_rms(x, weight, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _t_multi_token_loss(ids, p: dict, n_future: int, reduction: str) -> torch.Tensor:
    z = _t_trunk(ids, p)
    t = ids.shape[1]
    total = _t_ce((z @ p["model.wte.weight"].T)[:, :t - 1], ids[:, 1:])
    for i in range(2, n_future + 1):
        h = _t_block(z, p, f"heads.{i - 2}.", TF.gelu)
        h = TF.layer_norm(h, (EMBD,), p[f"norms.{i - 2}.weight"], p[f"norms.{i - 2}.bias"], eps=1e-5)
        total = total + _t_ce((h @ p["model.wte.weight"].T)[:, :t - i], ids[:, i:])
    return total / n_future if reduction == "mean" else total


def _t_mtp_loss(ids, p: dict, depth: int, weight: float) -> torch.Tensor:
    z = _t_trunk(ids, p)
    table = p["model.wte.weight"]
    t = ids.shape[1]
    total = _t_ce((z @ table.T)[:, :t - 1], ids[:, 1:])
    state = z
    for k in range(1, depth + 1):
        j = k - 1
        joined = torch.cat([_t_rms(state[:, :t - k], p[f"hidden_norms.{j}.weight"]),
                            _t_rms(table[ids[:, k:]], p[f"embedding_norms.{j}.weight"])], dim=-1)
        state = _t_block(joined @ p[f"projections.{j}.weight"], p, f"blocks.{j}.", TF.gelu)
        scores = _t_rms(state, p[f"output_norms.{j}.weight"]) @ table.T
        total = total + weight / depth * _t_ce(scores[:, :t - k - 1], ids[:, k + 1:])
    return total


def _compare_with_torch(module, lamina_loss, torch_loss) -> None:
    loss = lamina_loss()
    for p in module.parameters():
        p.grad = None
    loss.backward()
    params = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in module.state_dict().items()}
    expected = torch_loss(params)
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-10)
    grads = dict(module.named_parameters())
    assert set(grads) == set(params)
    for key, param in params.items():
        got = grads[key].grad
        got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
        np.testing.assert_allclose(got, param.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_multi_token_loss_and_gradients_match_a_torch_rewrite(f64, reduction):
    heads = models.MultiTokenHeads(_gpt2(0), n_future=3, dim_feedforward=12)
    heads.build((None, 1))
    _perturb(heads, 1)
    ids = _ids(2, 6)
    _compare_with_torch(heads, lambda: heads.loss(ids, reduction),
                        lambda p: _t_multi_token_loss(torch.tensor(ids), p, 3, reduction))


def test_mtp_loss_and_gradients_match_a_torch_rewrite(f64):
    mtp = models.MTPModules(_gpt2(2), depth=2, loss_weight=0.4, dim_feedforward=12)
    mtp.build((None, 1))
    _perturb(mtp, 3)
    ids = _ids(2, 7, seed=1)
    _compare_with_torch(mtp, lambda: mtp.loss(ids), lambda p: _t_mtp_loss(torch.tensor(ids), p, 2, 0.4))


def test_losses_pass_a_float64_gradient_check(f64):
    ids = _ids(2, 5, seed=2)
    scores = np.random.default_rng(3).normal(size=(2, 5, 3, VOCAB))
    assert check_gradients(lambda s: models.multi_token_loss(s, ids, "mean"), scores)
    outputs = [np.random.default_rng(k).normal(size=(2, 5 - k, VOCAB)) for k in range(3)]
    assert check_gradients(lambda a, b, c: models.mtp_loss((a, b, c), ids, 0.5), *outputs)
    mtp = models.MTPModules(_gpt2(4), depth=1, dim_feedforward=12)
    mtp.build((None, 1))
    _perturb(mtp, 5)
    previous, embedded = (np.random.default_rng(s).normal(size=(1, 4, EMBD)) for s in (6, 7))
    assert check_gradients(lambda h, e: mtp.step(1, h, e)[1], previous, embedded)


# -- MTP modules: shapes and causal structure ---------------------------------------------------
def test_mtp_depth_k_scores_have_t_minus_k_steps_and_read_tokens_up_to_t_plus_k(f64):
    mtp = models.MTPModules(_gpt2(6), depth=3, dim_feedforward=12)
    mtp.build((None, 1))
    _perturb(mtp, 7)
    mtp.eval()
    ids = _ids(2, 8, seed=4)
    with no_grad():
        outputs = mtp(ids)
        assert [tuple(o.shape) for o in outputs] == [(2, 8 - k, VOCAB) for k in range(4)]
        assert mtp.compute_output_shape((2, 8)) == tuple((2, 8 - k, VOCAB) for k in range(4))
        for j in range(8):                       # change token j: depth k moves at positions i >= j - k only
            changed = ids.copy()
            changed[:, j] = (changed[:, j] + 1) % VOCAB
            for k, (a, b) in enumerate(zip(outputs, mtp(changed))):
                moved = np.abs(a.numpy() - b.numpy()).max(axis=(0, 2)) > 1e-12
                first = max(j - k, 0)
                assert not moved[:first].any(), (j, k)
                assert moved[first:].all(), (j, k)


def test_multi_token_heads_shapes_and_head_one_is_the_model(f64):
    model = _gpt2(8)
    heads = models.MultiTokenHeads(model, n_future=4, dim_feedforward=12)
    ids = _ids(3, 5)
    with no_grad():
        scores = heads(ids).numpy()
        assert scores.shape == (3, 5, 4, VOCAB) == heads.compute_output_shape((3, 5))
        np.testing.assert_array_equal(scores[:, :, 0], model(ids).numpy())
    assert len(heads.heads) == 3 and models.MultiTokenHeads(model, 1).parameters() == model.parameters()


# -- self-speculative decoding ------------------------------------------------------------------
def _draft_heads(kind: str, model, n_future: int, seed: int):
    if kind == "parallel":
        heads = models.MultiTokenHeads(model, n_future, dim_feedforward=12)
    else:
        heads = models.MTPModules(model, depth=n_future - 1, dim_feedforward=12)
    heads.build((None, 1))
    rng = np.random.default_rng(seed)
    for name, p in heads.named_parameters():
        if not name.startswith("model."):
            p.data = (p.data + rng.normal(scale=0.5, size=p.shape)).astype(p.data.dtype)
    return heads


@pytest.mark.parametrize("kind", ["parallel", "sequential"])
@pytest.mark.parametrize("make", [_gpt2, _llama])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_speculative_output_equals_greedy_decoding(f64, kind, make, seed):
    model = make(seed)
    heads = _draft_heads(kind, model, 3, seed + 10)
    for prompt in (_ids(1, 3, seed)[0], _ids(1, 1, seed + 1)[0], _ids(1, 6, seed + 2)[0]):
        plain = model.generate(prompt[None], max_new_tokens=14, do_sample=False)[0, prompt.size:]
        out = models.self_speculative_generate(model, heads, prompt, 14)
        np.testing.assert_array_equal(out.tokens, plain)
        assert sum(out.accepted) >= 14 and all(1 <= a <= 3 for a in out.accepted)


def test_right_guesses_are_all_accepted_and_wrong_ones_none(f64):
    """Drafts from an oracle that knows the greedy continuation: n tokens per pass after the
    first; drafts that are always wrong: one token per pass. The output is greedy either way."""
    model = _gpt2(0)
    heads = models.MultiTokenHeads(model, 4, dim_feedforward=12)
    heads.build((None, 1))
    prompt = np.array([3, 1, 4])
    plain = model.generate(prompt[None], max_new_tokens=20, do_sample=False)[0]
    heads.draft = lambda hidden, ids: plain[ids.shape[1]:ids.shape[1] + 3]
    out = models.self_speculative_generate(model, heads, prompt, 12)
    np.testing.assert_array_equal(out.tokens, plain[3:15])
    assert out.accepted == [1, 4, 4, 3] and out.mean_accepted_length == 3.0
    heads.draft = lambda hidden, ids: (plain[ids.shape[1]:ids.shape[1] + 3] + 1) % VOCAB
    out = models.self_speculative_generate(model, heads, prompt, 12)
    np.testing.assert_array_equal(out.tokens, plain[3:15])
    assert out.accepted == [1] * 12


def test_self_speculative_stops_at_eos_and_at_the_context(f64):
    model = _gpt2(1)
    heads = _draft_heads("sequential", model, 3, 4)
    prompt = np.array([1, 2])
    plain = model.generate(prompt[None], max_new_tokens=12, do_sample=False)[0, 2:]
    eos = int(plain[4])
    out = models.self_speculative_generate(model, heads, prompt, 12, eos_token_id=eos)
    np.testing.assert_array_equal(out.tokens, plain[:list(plain).index(eos) + 1])
    short = _gpt2(1, positions=10)
    out = models.self_speculative_generate(short, _draft_heads("parallel", short, 4, 5), prompt, 8)
    np.testing.assert_array_equal(out.tokens, short.generate(prompt[None], max_new_tokens=8,
                                                             do_sample=False)[0, 2:])


# -- saving and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["parallel", "sequential"])
def test_config_and_save_load_round_trip(tmp_path, kind):
    heads = _draft_heads(kind, _gpt2(3), 3, 6)
    ids = _ids(2, 5)

    def outputs(module) -> list[np.ndarray]:
        module.eval()
        with no_grad():
            out = module(tensor(ids))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    expected = outputs(heads)
    clone = layer_from_config(layer_to_config(heads))
    clone.build((None, 1))
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in heads.state_dict().items()}
    lamina.save(heads, tmp_path / "mtp.lamina")
    loaded = lamina.load(tmp_path / "mtp.lamina")
    assert type(loaded) is type(heads) and loaded.n_future == 3
    for got, want in zip(outputs(loaded), expected):
        np.testing.assert_array_equal(got, want)


def test_errors_name_the_class_and_the_values():
    model = _gpt2(0)
    with pytest.raises(ValueError, match=r"MultiTokenHeads: n_future must be an int >= 1, got 0"):
        models.MultiTokenHeads(model, 0)
    with pytest.raises(ValueError, match=r"MTPModules: depth must be an int >= 1, got 0"):
        models.MTPModules(model, depth=0)
    with pytest.raises(TypeError, match=r"MultiTokenHeads: the model must offer hidden_states\(\)"):
        models.MultiTokenHeads(lamina.nn.Dense(3), 2)
    other = models.GPT2(vocab_size=VOCAB + 2, n_positions=16, n_embd=EMBD, n_layer=1, n_head=HEADS)
    with pytest.raises(ValueError, match=r"the model scores 9 tokens and the heads 7; they must share a vocabulary"):
        models.self_speculative_generate(other, models.MultiTokenHeads(model, 2), np.array([1]), 3)
    with pytest.raises(ValueError, match=r"the heads were built on another GPT2"):
        models.self_speculative_generate(_gpt2(0), models.MultiTokenHeads(model, 2), np.array([1]), 3)
    with pytest.raises(ValueError, match=r"multi_token_loss: token ids must lie in \[0, 7\)"):
        models.multi_token_loss(np.zeros((1, 3, 2, VOCAB)), np.array([[1, 2, 9]]))
    with pytest.raises(ValueError, match=r"multi_token_loss: ids \(1, 2\) do not match scores \(1, 3, 2, 7\)"):
        models.multi_token_loss(np.zeros((1, 3, 2, VOCAB)), np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"mtp_loss: depth 1's scores should be \(1, 3, 7\), got \(1, 4, 7\)"):
        models.mtp_loss([np.zeros((1, 4, VOCAB)), np.zeros((1, 4, VOCAB))], np.array([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int >= 1, got 0"):
        models.self_speculative_generate(model, models.MultiTokenHeads(model, 2), np.array([1]), 0)


def test_readme_section():
    printed, names = run_readme_section("Multi-token prediction")
    out, model, ids = names["out"], names["model"], names["ids"]
    assert printed.splitlines()[0] == "(16, 12, 3, 8)"
    assert out.mean_accepted_length > 2.0 and printed.strip().endswith(str(out.mean_accepted_length))
    np.testing.assert_array_equal(out.tokens, model.generate(ids[:1, :2], max_new_tokens=12, do_sample=False)[0, 2:])
