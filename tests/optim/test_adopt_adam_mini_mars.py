"""ADOPT, Adam-mini and MARS against float64 torch rewrites of their published algorithms, step
for step; their special cases (ADOPT's first step, Adam-mini's one-coordinate blocks, MARS
with gamma = 0), state-dict resumption, hyperparameter checks, the blocks Adam-mini makes of
lamina's layers, and a short training run of each on digits next to AdamW."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, torch_loss
from test_rprop_lion_lookahead import accuracy, digits_split, mlp

import lamina
from helpers import assert_close
from lamina import nn
from lamina.optim import ADOPT, MARS, AdamMini, AdamW
from lamina.train import Trainer

# -- references: one step of each algorithm on torch tensors ------------------------------


def adopt_reference(p, g, state, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0, decouple=False,
                    clip_exponent=0.25):
    """Taniguchi et al. 2024, Algorithm 2 with the official code's clip and weight decay."""
    beta1, beta2 = betas
    if not decouple:
        g = g + weight_decay * p
    if not state:
        state.update(step=0, m=torch.zeros_like(p), v=g * g)
        return
    state["step"] += 1
    u = g / torch.clamp(state["v"].sqrt(), min=eps)
    if clip_exponent is not None:
        bound = state["step"] ** clip_exponent
        u = u.clamp(-bound, bound)
        state.setdefault("clipped", []).append(bool((u.abs() == bound).any()))
    state["m"] = beta1 * state["m"] + (1 - beta1) * u
    if decouple:
        p.mul_(1 - lr * weight_decay)
    p.sub_(lr * state["m"])
    state["v"] = beta2 * state["v"] + (1 - beta2) * g * g


def adam_mini_reference(p, g, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, partition="auto"):
    """Zhang et al. 2024, Algorithm 1: the mean of g^2 over each block. Blocks as lamina
    documents them for a list of parameters: a 2-D (in, out) weight per column, else the tensor."""
    beta1, beta2 = betas
    if not state:
        state.update(step=0, m=torch.zeros_like(p), v=None)
    state["step"] += 1
    t = state["step"]
    if partition == "auto" and p.ndim == 2:
        block_mean = (g * g).mean(dim=0, keepdim=True)
    else:
        block_mean = (g * g).mean()
    state["v"] = (1 - beta2) * block_mean if state["v"] is None else beta2 * state["v"] + (1 - beta2) * block_mean
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    p.mul_(1 - lr * weight_decay)
    p.sub_(lr / (1 - beta1**t) * state["m"] / (state["v"].sqrt() / math.sqrt(1 - beta2**t) + eps))


def mars_reference(p, g, state, lr=3e-3, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.0, gamma=0.025):
    """Yuan et al. 2024, Algorithm 2 (MARS-AdamW, approximate: the previous step's gradient)."""
    beta1, beta2 = betas
    if not state:
        state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p), last=torch.zeros_like(p))
    state["step"] += 1
    t = state["step"]
    c = g + gamma * beta1 / (1 - beta1) * (g - state["last"])
    norm = torch.linalg.vector_norm(c)
    state.setdefault("clipped", []).append(bool(norm > 1))
    if norm > 1:
        c = c / norm
    state["m"] = beta1 * state["m"] + (1 - beta1) * c
    state["v"] = beta2 * state["v"] + (1 - beta2) * c * c
    denom = state["v"].sqrt() / math.sqrt(1 - beta2**t) + eps
    p.sub_(lr * (weight_decay * p + state["m"] / (1 - beta1**t) / denom))
    state["last"] = g.clone()


CASES = [
    ("adopt", ADOPT, adopt_reference, {"lr": 0.01}),
    ("adopt-decoupled", ADOPT, adopt_reference,
     {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.1, "decouple": True}),
    ("adopt-l2-no-clip", ADOPT, adopt_reference,
     {"lr": 0.02, "weight_decay": 0.05, "clip_exponent": None, "betas": (0.9, 0.5)}),
    ("adam-mini", AdamMini, adam_mini_reference, {"lr": 0.01}),
    ("adam-mini-tensor-wd", AdamMini, adam_mini_reference,
     {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-4, "weight_decay": 0.1, "partition": "tensor"}),
    ("mars", MARS, mars_reference, {"lr": 0.01}),
    ("mars-wd-gamma", MARS, mars_reference,
     {"lr": 0.02, "betas": (0.9, 0.95), "eps": 1e-4, "weight_decay": 0.1, "gamma": 0.3}),
]


def _torch_grads(tensors) -> list[torch.Tensor]:
    tp = [torch.tensor(np.asarray(a), requires_grad=True) for a in tensors]
    torch_loss(tp).backward()
    return [p.grad.detach().clone() for p in tp]


@pytest.mark.parametrize("name,ours,reference,kwargs", CASES, ids=[c[0] for c in CASES])
def test_follows_the_reference_step_for_step(name, ours, reference, kwargs):
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy()) for a in arrays]
    tstate = [{} for _ in arrays]
    lparams = lamina_params(arrays)
    opt = ours(lparams, **kwargs)
    for step in range(16):
        grads = _torch_grads(tparams)
        for p, g, s in zip(tparams, grads, tstate):
            reference(p, g, s, **kwargs)
        for lp, g in zip(lparams, grads):
            lp.grad = g.numpy().copy()
        before = lparams[0].grad.copy()
        opt.step()
        np.testing.assert_array_equal(lparams[0].grad, before)   # the gradient is never written
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.numpy(), TOL, f"{name} step {step} parameter {k}")
    flags = [f for s in tstate for f in s.get("clipped", [])]
    if ours is MARS or kwargs.get("clip_exponent", 0.25) is not None and ours is ADOPT:
        assert any(flags) and not all(flags)   # both sides of the clip were taken


def test_adopt_first_step_only_sets_the_second_moment():
    arrays = initial_arrays()
    params = lamina_params(arrays)
    opt = ADOPT(params, lr=0.1, weight_decay=0.1, decouple=True)
    grads = _torch_grads(arrays)
    for p, g in zip(params, grads):
        p.grad = g.numpy()
    opt.step()
    for k, (p, a, g) in enumerate(zip(params, arrays, grads)):
        np.testing.assert_array_equal(p.data, a)
        np.testing.assert_array_equal(opt.state[k]["exp_avg_sq"], g.numpy() ** 2)
        assert not opt.state[k]["exp_avg"].any()
    _run(opt, params, 1)
    assert not np.allclose(params[0].data, arrays[0])


@pytest.mark.parametrize("kwargs", [{"lr": 0.01, "weight_decay": 0.0}, {"lr": 0.02, "betas": (0.8, 0.9),
                                                                        "eps": 1e-4, "weight_decay": 0.1}])
def test_adam_mini_with_one_coordinate_blocks_is_adamw(kwargs):
    arrays = initial_arrays(1)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    topt = torch.optim.AdamW(tparams, **kwargs)
    lparams = lamina_params(arrays)
    opt = AdamMini(lparams, partition="coordinate", **kwargs)
    for step in range(12):
        topt.zero_grad()
        torch_loss(tparams).backward()
        topt.step()
        for lp, tp in zip(lparams, tparams):
            lp.grad = tp.grad.numpy().copy()
        opt.step()
        for lp, tp in zip(lparams, tparams):
            assert_close(lp.data, tp.detach().numpy(), TOL, f"step {step}")
    assert opt.second_moment_entries() == (sum(a.size for a in arrays),) * 2


def test_mars_with_gamma_zero_is_adamw_while_the_clip_is_idle():
    arrays = initial_arrays(3)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    kwargs = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1}
    topt = torch.optim.AdamW(tparams, **kwargs)
    lparams = lamina_params(arrays)
    opt = MARS(lparams, gamma=0.0, **kwargs)
    for step in range(12):
        topt.zero_grad()
        (0.1 * torch_loss(tparams)).backward()   # small gradients: every norm below 1
        for lp, tp in zip(lparams, tparams):
            assert torch.linalg.vector_norm(tp.grad) < 1
            lp.grad = tp.grad.numpy().copy()
        topt.step()
        opt.step()
        for lp, tp in zip(lparams, tparams):
            assert_close(lp.data, tp.detach().numpy(), TOL, f"step {step}")


@pytest.mark.parametrize("name,ours,reference,kwargs", CASES, ids=[c[0] for c in CASES])
def test_state_dict_resumes_exactly(name, ours, reference, kwargs):
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(ours(straight, **kwargs), straight, 12)
    again = lamina_params(arrays)
    first = ours(again, **kwargs)
    _run(first, again, 7)
    fresh = ours(again, lr=0.5)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == kwargs["lr"]
    _run(fresh, again, 5)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)


def test_adam_mini_refuses_a_second_moment_of_the_wrong_block_count():
    params = lamina_params(initial_arrays())
    opt = AdamMini(params)
    _run(opt, params, 1)
    saved = opt.state_dict()
    saved["state"][0]["exp_avg_sq"] = np.zeros(4)   # (4, 3) weight: 3 column blocks
    with pytest.raises(ValueError, match="AdamMini.*exp_avg_sq.*expected \\(3,\\)"):
        AdamMini(params).load_state_dict(saved)


def test_adam_mini_blocks_of_lamina_layers():
    """Per token for an embedding, per head for attention queries and keys, per output neuron
    for value columns and Dense kernels, per filter for convolutions, per tensor for vectors;
    the first second moments are the block means of g^2 times (1 - beta2)."""
    lamina.manual_seed(0)
    embed, attn, dense = nn.Embedding(7, 8), nn.MultiHeadAttention(8, 2, num_kv_heads=1), nn.Dense(3)
    conv = nn.Conv2D(5, 3)
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 1]])
    model = nn.Sequential(embed, attn, dense)
    h = model(ids)
    out = h.sum() + (conv(lamina.tensor(np.ones((1, 4, 4, 2), np.float32))) ** 2).sum()
    out.backward()
    params = model.parameters() + conv.parameters()
    holder = nn.Sequential(model, conv)
    opt = AdamMini(holder, betas=(0.9, 0.5))
    opt.step()
    counts = {name: opt.state[i]["exp_avg_sq"].shape[0] for i, (name, _) in enumerate(holder.named_parameters())}
    assert counts == {"sequential.embedding.weight": 7, "sequential.multi_head_attention.in_weight": 2 + 1 + 4,
                      "sequential.multi_head_attention.in_bias": 1, "sequential.multi_head_attention.out_weight": 8,
                      "sequential.multi_head_attention.out_bias": 1, "sequential.dense.weight": 3,
                      "sequential.dense.bias": 1, "conv2d.weight": 5, "conv2d.bias": 1}
    g = attn.in_weight.grad
    v = opt.state[1]["exp_avg_sq"]
    expected = [(g[:, :4] ** 2).mean(), (g[:, 4:8] ** 2).mean(), (g[:, 8:12] ** 2).mean(),
                *(g[:, 12:] ** 2).mean(axis=0)]
    np.testing.assert_allclose(v, 0.5 * np.array(expected), rtol=1e-5)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], 0.5 * (embed.weight.grad ** 2).mean(axis=1), rtol=1e-5)
    ours, adams = opt.second_moment_entries()
    assert adams == sum(p.data.size for p in params) and ours == sum(counts.values()) < adams / 10


BAD = [
    (ADOPT, {"lr": -1.0}, "lr"),
    (ADOPT, {"betas": (0.9, 1.0)}, "beta2"),
    (ADOPT, {"eps": -1e-6}, "eps"),
    (ADOPT, {"decouple": 1}, "decouple"),
    (ADOPT, {"clip_exponent": -0.25}, "clip_exponent"),
    (AdamMini, {"betas": (1.0, 0.999)}, "beta1"),
    (AdamMini, {"partition": "rows"}, "partition"),
    (AdamMini, {"weight_decay": -0.1}, "weight_decay"),
    (MARS, {"gamma": -0.1}, "gamma"),
    (MARS, {"betas": (0.9,)}, "betas"),
    (MARS, {"lr": float("nan")}, "lr"),
]


@pytest.mark.parametrize("ours,kwargs,word", BAD, ids=[f"{c[0].__name__}-{c[2]}" for c in BAD])
def test_invalid_hyperparameters_are_refused_by_name(ours, kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        ours(lamina_params(initial_arrays()), **kwargs)
    assert ours.__name__ in str(info.value)


def _digits_accuracy(make_optimizer) -> float:
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    trainer = Trainer(model, "categorical_cross_entropy", make_optimizer(model), verbose=0)
    trainer.fit((xtr, ytr), epochs=5, batch_size=32, seed=0)
    return accuracy(trainer, xte, yte)


@pytest.fixture(scope="module")
def adamw_digits_accuracy():
    return _digits_accuracy(lambda m: AdamW(m, lr=3e-3))


TRAINING = [
    (ADOPT, {"lr": 3e-3}),
    (AdamMini, {"lr": 3e-3}),
    (MARS, {"lr": 3e-3}),
]


@pytest.mark.parametrize("ours,kwargs", TRAINING, ids=[c[0].__name__ for c in TRAINING])
def test_trains_an_mlp_on_digits_about_as_well_as_adamw(ours, kwargs, adamw_digits_accuracy):
    ours_accuracy = _digits_accuracy(lambda m: ours(m, **kwargs))
    print(f"{ours.__name__} {ours_accuracy:.3f}, AdamW {adamw_digits_accuracy:.3f}")
    assert adamw_digits_accuracy >= 0.9
    assert ours_accuracy >= adamw_digits_accuracy - 0.03


def test_readme_example_runs(capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### ADOPT, Adam-mini and MARS", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    halved, entries = capsys.readouterr().out.splitlines()
    assert halved.split()[2:] == ["True", "True", "True"]
    assert entries.split()[-4:] == ["20", "of", "Adam's", "178"]
