"""Adafactor, ASGD, Muon and SparseAdam against torch.optim step for step (float64); LAMB and
LARS against their papers' algorithms written here in NumPy (and against torch's AdamW and
SGD where the layer-wise scaling is off); saved state and resumed runs for all six."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _step_both, _to_json, initial_arrays, lamina_params, numpy_grads

from helpers import assert_close
from lamina.nn import Parameter
from lamina.optim import ASGD, LAMB, LARS, Adafactor, Adam, Muon, SparseAdam
from lamina.optim.muon import newton_schulz


def _compare_runs(ours, theirs, kwargs, arrays, loss, steps=20, tol=TOL, label=""):
    """``steps`` updates of both optimizers from ``arrays`` on torch's ``loss`` gradients;
    every parameter is compared after every step. Returns both optimizers and parameters."""
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt, lopt = theirs(tparams, **kwargs), ours(lparams, **kwargs)
    for step in range(steps):
        topt.zero_grad()
        loss(tparams).backward()
        for lp, tp in zip(lparams, tparams):
            lp.grad = tp.grad.numpy().copy()
        topt.step()
        lopt.step()
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.detach().numpy(), tol, f"{label} step {step} parameter {k}")
    for k, (lp, a) in enumerate(zip(lparams, arrays)):
        assert not np.allclose(lp.data, a), f"{label}: parameter {k} did not move"
    return topt, lopt, tparams, lparams


def _mlp_loss(params):
    from test_optimizers import torch_loss
    return torch_loss(params)


def _compare_state(lopt, topt, tparams, keys, tol=TOL):
    for k, tp in enumerate(tparams):
        for key in keys:
            if key in topt.state[tp]:
                expected = topt.state[tp][key]
                expected = expected.item() if expected.ndim == 0 else expected.numpy()
                assert_close(lopt.state[k][key], expected, tol, f"state {key!r} of parameter {k}")


def _resumes_exactly(kind, kwargs, trained=(0, 1, 2, 3), steps=6):
    """12 straight steps == 6 steps, a JSON state-dict round trip into a new optimizer (made
    with another lr), 6 more steps; ``trained``: the MLP's parameters given to the optimizer."""
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(kind([straight[i] for i in trained], **kwargs), straight, 2 * steps)
    again = lamina_params(arrays)
    first = kind([again[i] for i in trained], **kwargs)
    _run(first, again, steps)
    fresh = kind([again[i] for i in trained], lr=0.5)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == first.lr and fresh.step_count == steps
    _run(fresh, again, steps)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)
    return fresh


def _defaults_match(ours, theirs, params, skip=()):
    tdefaults = theirs([torch.zeros(2, 2, requires_grad=True)]).defaults
    for key, value in ours(params).defaults.items():
        if key not in skip:
            assert tdefaults[key] == value, (ours.__name__, key)


# -- Adafactor ---------------------------------------------------------------------------

ADAFACTOR_CASES = {
    "defaults": {},
    "all": {"lr": 0.05, "beta2_decay": -0.5, "eps": (1e-4, 1e-2), "d": 1.5, "weight_decay": 0.1},
    "maximize": {"lr": 0.03, "maximize": True, "weight_decay": 0.01},
    "clipped": {"lr": 0.3, "d": 1.0, "eps": (1e-30, 1e-3)},
}


@pytest.mark.parametrize("case", list(ADAFACTOR_CASES))
def test_adafactor_matches_torch_on_an_mlp(case):
    topt, lopt, tparams, _ = _compare_runs(Adafactor, torch.optim.Adafactor, ADAFACTOR_CASES[case],
                                           initial_arrays(), _mlp_loss, label=f"Adafactor {case}")
    _compare_state(lopt, topt, tparams, ("row_var", "col_var", "variance"))
    assert lopt.state[0]["row_var"].shape == (4, 1) and lopt.state[0]["col_var"].shape == (1, 3)
    assert "variance" in lopt.state[1] and "row_var" not in lopt.state[1]


def test_adafactor_matches_torch_on_0d_to_3d_parameters():
    rng = np.random.default_rng(3)
    shapes = [(), (5,), (3, 4), (2, 3, 4)]
    arrays = [rng.standard_normal(s) for s in shapes]
    targets = [torch.from_numpy(rng.standard_normal(s)) for s in shapes]

    def loss(params):
        return sum(((p - t) ** 2 * (1 + p**2)).sum() for p, t in zip(params, targets))

    topt, lopt, tparams, _ = _compare_runs(Adafactor, torch.optim.Adafactor, {"lr": 0.05, "weight_decay": 0.05},
                                           arrays, loss, label="Adafactor 0-3d")
    _compare_state(lopt, topt, tparams, ("row_var", "col_var", "variance"))
    assert lopt.state[3]["row_var"].shape == (2, 3, 1) and lopt.state[3]["col_var"].shape == (2, 1, 4)


def test_adafactor_state_round_trip_defaults_and_checks():
    fresh = _resumes_exactly(Adafactor, {"lr": 0.05, "weight_decay": 0.01})
    saved = fresh.state_dict()
    saved["state"][0]["row_var"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"'row_var' of parameter 0 has shape \(4, 3\), expected \(4, 1\)"):
        Adafactor(lamina_params(initial_arrays())).load_state_dict(saved)
    _defaults_match(Adafactor, torch.optim.Adafactor, lamina_params(initial_arrays()))
    with pytest.raises(ValueError, match=r"Adafactor: invalid beta2_decay 0.5 \(must be <= 0\)"):
        Adafactor(lamina_params(initial_arrays()), beta2_decay=0.5)
    with pytest.raises(ValueError, match=r"Adafactor: invalid d 0.5"):
        Adafactor(lamina_params(initial_arrays()), d=0.5)


def test_adafactor_keeps_float32():
    p = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = Adafactor([p], weight_decay=0.1)
    for _ in range(3):
        p.grad = np.full((3, 2), 0.25, dtype=np.float32)
        opt.step()
    assert p.data.dtype == np.float32 and opt.state[0]["row_var"].dtype == np.float32
    assert np.isfinite(p.data).all() and not np.allclose(p.data, 1.0)


# -- ASGD --------------------------------------------------------------------------------

ASGD_CASES = {
    "defaults": {},
    "averaging": {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 5, "weight_decay": 0.1},
    "maximize": {"lr": 0.02, "t0": 3, "maximize": True},
}


@pytest.mark.parametrize("case", list(ASGD_CASES))
def test_asgd_matches_torch(case):
    topt, lopt, tparams, _ = _compare_runs(ASGD, torch.optim.ASGD, ASGD_CASES[case], initial_arrays(),
                                           _mlp_loss, label=f"ASGD {case}")
    _compare_state(lopt, topt, tparams, ("ax", "eta", "mu"))


def test_asgd_ax_is_the_mean_of_the_iterates_from_t0_plus_2():
    """mu = 1/max(1, t - t0) after step t: ax is the running mean of w_{t0+2}, ..., w_T."""
    arrays = initial_arrays()
    params = lamina_params(arrays)
    opt = ASGD(params, lr=0.05, lambd=0.0, t0=4)
    iterates = []
    for _ in range(12):
        for p, g in zip(params, numpy_grads([p.data for p in params])):
            p.grad = g
        opt.step()
        iterates.append([p.data.copy() for p in params])
    for k, averaged in enumerate(opt.averaged()):
        expected = np.mean([it[k] for it in iterates[5:]], axis=0)
        np.testing.assert_allclose(averaged, expected, rtol=1e-12)
        assert not np.allclose(averaged, params[k].data)
    assert opt.state[0]["mu"] == pytest.approx(1 / 8)


def test_asgd_state_round_trip_and_defaults():
    fresh = _resumes_exactly(ASGD, {"lr": 0.05, "t0": 3, "lambd": 0.01})
    assert isinstance(fresh.state[0]["eta"], float) and fresh.state[0]["step"] == 12
    _defaults_match(ASGD, torch.optim.ASGD, lamina_params(initial_arrays()))


# -- Muon --------------------------------------------------------------------------------

MUON_CASES = {
    "defaults": {"lr": 0.02},
    "plain-momentum-adamw-rms": {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw",
                                 "weight_decay": 0.0},
    "all": {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "ns_steps": 3, "eps": 1e-5,
            "ns_coefficients": (2.0, -1.5, 0.5), "adjust_lr_fn": "original"},
}
MATRICES = [(4, 3), (2, 4)]


def _muon_arrays():
    return [a for a in initial_arrays() if a.ndim == 2]


def _mlp_loss_of_matrices(biases):
    def loss(matrices):
        return _mlp_loss([matrices[0], biases[0], matrices[1], biases[1]])
    return loss


@pytest.mark.parametrize("case", list(MUON_CASES))
def test_muon_matches_torch_with_its_newton_schulz_in_float64(case, monkeypatch):
    """torch orthogonalises in bfloat16; with that cast made a copy its own code runs in
    float64 and must agree with lamina's to rounding (tall and wide matrices)."""
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
    biases = [torch.from_numpy(a) for a in initial_arrays() if a.ndim == 1]
    topt, lopt, tparams, _ = _compare_runs(Muon, torch.optim.Muon, MUON_CASES[case], _muon_arrays(),
                                           _mlp_loss_of_matrices(biases), label=f"Muon {case}")
    _compare_state(lopt, topt, tparams, ("momentum_buffer",))


def test_muon_in_float32_follows_torchs_bfloat16_run():
    """Unpatched torch (bfloat16 Newton-Schulz, float32 weights) against lamina in float32:
    the same trajectory to bfloat16's precision (about 1% of the distance travelled)."""
    arrays = [a.astype(np.float32) for a in _muon_arrays()]
    biases = [torch.from_numpy(a.astype(np.float32)) for a in initial_arrays() if a.ndim == 1]
    x, y = (torch.from_numpy(a.astype(np.float32)) for a in _mlp_data())
    tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
    lparams = [Parameter(a.copy()) for a in arrays]
    topt, lopt = torch.optim.Muon(tparams, lr=0.02), Muon(lparams, lr=0.02)
    for _ in range(20):
        topt.zero_grad()
        h = torch.tanh(x @ tparams[0].T + biases[0])
        ((h @ tparams[1].T + biases[1] - y) ** 2).mean().backward()
        for lp, tp in zip(lparams, tparams):
            lp.grad = tp.grad.numpy().copy()
        topt.step()
        lopt.step()
    for lp, tp, a in zip(lparams, tparams, arrays):
        assert lp.data.dtype == np.float32
        travelled = np.abs(tp.detach().numpy() - a).max()
        assert np.abs(lp.data - tp.detach().numpy()).max() < 0.02 * travelled


def _mlp_data():
    from test_optimizers import X, Y
    return X, Y


def test_newton_schulz_flattens_the_singular_values():
    rng = np.random.default_rng(0)
    for shape in [(8, 5), (5, 8)]:
        g = rng.standard_normal(shape) @ np.diag(np.logspace(-1, 1, shape[1]))
        before = np.linalg.svd(g, compute_uv=False)
        s = np.linalg.svd(newton_schulz(g), compute_uv=False)
        assert before.max() > 50 * before.min()
        assert s.min() > 0.6 and s.max() < 1.25, s


def test_muon_refuses_non_matrices_and_round_trips():
    with pytest.raises(ValueError, match=r"Muon: only 2-D parameters .* shape \(4,\)"):
        Muon(lamina_params(initial_arrays()))
    with pytest.raises(ValueError, match="Muon: invalid adjust_lr_fn 'x'"):
        Muon(lamina_params(_muon_arrays()), adjust_lr_fn="x")
    _resumes_exactly(Muon, {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}, trained=(0, 2))
    _defaults_match(Muon, torch.optim.Muon, lamina_params(_muon_arrays()))


# -- LAMB and LARS -------------------------------------------------------------------------

def _lamb_reference(arrays, grads_of, steps, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                    bias_correction=True, max_trust_ratio=None):
    """The paper's Algorithm 2 (phi the identity or a clip), one trust ratio per tensor."""
    beta1, beta2 = betas
    w = [a.copy() for a in arrays]
    m = [np.zeros_like(a) for a in arrays]
    v = [np.zeros_like(a) for a in arrays]
    for t in range(1, steps + 1):
        grads = grads_of(w)
        for k, g in enumerate(grads):
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            c1, c2 = (1 - beta1**t, 1 - beta2**t) if bias_correction else (1, 1)
            r = (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
            u = r + weight_decay * w[k]
            wn, un = np.linalg.norm(w[k]), np.linalg.norm(u)
            ratio = wn / un if wn > 0 and un > 0 else 1.0
            if max_trust_ratio is not None:
                ratio = min(ratio, max_trust_ratio)
            w[k] = w[k] - lr * ratio * u
    return w


def _lars_reference(arrays, grads_of, steps, lr, momentum=0.9, weight_decay=0.0, eta=0.001, eps=1e-8,
                    nesterov=False):
    """The paper's Algorithm 1: local lr = eta ||w|| / (||g|| + beta ||w||), momentum on the
    scaled step."""
    w = [a.copy() for a in arrays]
    vel = [np.zeros_like(a) for a in arrays]
    for _ in range(steps):
        grads = grads_of(w)
        for k, g in enumerate(grads):
            wn, gn = np.linalg.norm(w[k]), np.linalg.norm(g)
            local = eta * wn / (gn + weight_decay * wn + eps) if wn > 0 and gn > 0 else 1.0
            d = local * (g + weight_decay * w[k])
            vel[k] = momentum * vel[k] + d
            w[k] = w[k] - lr * (d + momentum * vel[k] if nesterov else vel[k])
    return w


def _run_lamina(kind, arrays, steps, **kwargs):
    params = lamina_params(arrays)
    _run(kind(params, **kwargs), params, steps)
    return [p.data for p in params]


LAMB_CASES = {
    "defaults": {"lr": 0.01},
    "no-bias-correction-clipped": {"lr": 0.02, "bias_correction": False, "max_trust_ratio": 0.5,
                                   "weight_decay": 0.1, "betas": (0.8, 0.95), "eps": 1e-3},
    "no-decay": {"lr": 0.01, "weight_decay": 0.0},
}


@pytest.mark.parametrize("case", list(LAMB_CASES))
def test_lamb_follows_the_paper(case):
    kwargs = LAMB_CASES[case]
    arrays = initial_arrays()
    expected = _lamb_reference(arrays, numpy_grads, 20, **kwargs)
    for k, (got, want) in enumerate(zip(_run_lamina(LAMB, arrays, 20, **kwargs), expected)):
        assert_close(got, want, TOL, f"LAMB {case} parameter {k}")


def test_lamb_step_is_lr_times_the_weights_norm():
    """With no decay and no clip, the first step of every tensor has norm lr ||w||."""
    params = lamina_params(initial_arrays())
    before = [p.data.copy() for p in params]
    opt = LAMB(params, lr=0.01, weight_decay=0.0)
    for p, g in zip(params, numpy_grads(before)):
        p.grad = g
    opt.step()
    for p, w in zip(params, before):
        assert np.linalg.norm(p.data - w) == pytest.approx(0.01 * np.linalg.norm(w), rel=1e-12)


def test_lamb_without_adaptation_is_torchs_adamw():
    """r + wd w stepped by lr: AdamW's decoupled decay; a group with adapt=False takes it."""
    kwargs = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.1}
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt = torch.optim.AdamW(tparams, **kwargs)
    lopt = LAMB([{"params": lparams[:2]}, {"params": lparams[2:], "adapt": False}], **kwargs)
    adapted = _lamb_reference(arrays, numpy_grads, 1, **kwargs)
    for step in range(20):
        _step_both(topt, lopt, tparams, lparams)
        if step == 0:
            assert_close(lparams[0].data, adapted[0], TOL, "LAMB adapted group")
        for k in (2, 3):
            assert_close(lparams[k].data, tparams[k].detach().numpy(), TOL, f"LAMB adapt=False {step} {k}")


LARS_CASES = {
    "defaults": {"lr": 1.0},
    "decay-nesterov": {"lr": 2.0, "weight_decay": 0.01, "nesterov": True, "momentum": 0.8},
    "no-momentum": {"lr": 5.0, "momentum": 0.0, "eta": 0.01},
}


@pytest.mark.parametrize("case", list(LARS_CASES))
def test_lars_follows_the_paper(case):
    kwargs = dict(LARS_CASES[case])
    arrays = initial_arrays()
    expected = _lars_reference(arrays, numpy_grads, 20, **kwargs)
    if "eta" in kwargs:
        kwargs["trust_coefficient"] = kwargs.pop("eta")
    got = _run_lamina(LARS, arrays, 20, **kwargs)
    for k, (g, want) in enumerate(zip(got, expected)):
        assert_close(g, want, TOL, f"LARS {case} parameter {k}")
        assert not np.allclose(g, arrays[k])


def test_lars_without_adaptation_is_torchs_momentum_sgd():
    kwargs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True}
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt = torch.optim.SGD(tparams, **kwargs)
    lopt = LARS(lparams, adapt=False, **kwargs)
    for step in range(20):
        _step_both(topt, lopt, tparams, lparams)
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.detach().numpy(), TOL, f"LARS adapt=False step {step} parameter {k}")


@pytest.mark.parametrize("kind,kwargs", [(LAMB, {"lr": 0.01}), (LARS, {"lr": 1.0, "weight_decay": 0.01})],
                         ids=["lamb", "lars"])
def test_lamb_lars_state_round_trip(kind, kwargs):
    _resumes_exactly(kind, kwargs)
    with pytest.raises(ValueError, match=f"{kind.__name__}: invalid adapt 1"):
        kind(lamina_params(initial_arrays()), adapt=1)


# -- SparseAdam ----------------------------------------------------------------------------

def test_sparse_adam_matches_torch_on_a_sparse_embedding():
    """torch's Embedding(sparse=True) gives a sparse gradient of the rows looked up; lamina's
    dense gradient has the same rows nonzero. Rows no batch uses must not move, as in torch."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((10, 3))
    batches = [rng.integers(0, 6, size=(4,)) for _ in range(20)]   # rows 6..9 never used
    target = torch.from_numpy(rng.standard_normal((4, 3)))
    embedding = torch.nn.Embedding(10, 3, sparse=True, dtype=torch.float64)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(table))
    topt = torch.optim.SparseAdam(embedding.parameters(), lr=0.05, betas=(0.8, 0.95))
    weight = Parameter(table.copy(), dtype=np.float64)
    lopt = SparseAdam([weight], lr=0.05, betas=(0.8, 0.95))
    dense = Adam([Parameter(table.copy(), dtype=np.float64)], lr=0.05, betas=(0.8, 0.95), eps=1e-8)
    for step, ids in enumerate(batches):
        topt.zero_grad()
        ((embedding(torch.from_numpy(ids)) - target) ** 2).sum().backward()
        grad = embedding.weight.grad.to_dense().numpy().copy()
        weight.grad = grad
        dense.params[0].grad = grad
        topt.step()
        lopt.step()
        dense.step()
        assert_close(weight.data, embedding.weight.detach().numpy(), TOL, f"SparseAdam step {step}")
    np.testing.assert_array_equal(weight.data[6:], table[6:])
    unused_in_last = sorted(set(range(6)) - set(batches[-1].tolist()))
    assert unused_in_last and not np.allclose(dense.params[0].data[unused_in_last], weight.data[unused_in_last])
    for key in ("exp_avg", "exp_avg_sq"):
        assert_close(lopt.state[0][key], topt.state[embedding.weight][key].to_dense().numpy(), TOL, key)


def test_sparse_adam_round_trip_and_checks():
    _resumes_exactly(SparseAdam, {"lr": 0.01})
    with pytest.raises(ValueError, match="SparseAdam: weight_decay is not supported"):
        SparseAdam([{"params": lamina_params(initial_arrays()), "weight_decay": 0.1}])
    _defaults_match(SparseAdam, torch.optim.SparseAdam, lamina_params(initial_arrays()), skip=("weight_decay",))


def test_every_new_optimizer_steps_in_place_and_leaves_the_gradient():
    for kind, params in [(Adafactor, initial_arrays()), (ASGD, initial_arrays()), (LAMB, initial_arrays()),
                         (LARS, initial_arrays()), (SparseAdam, initial_arrays()), (Muon, _muon_arrays())]:
        lparams = lamina_params(params)
        opt = kind(lparams)
        grads = numpy_grads(initial_arrays()) if kind is not Muon else [np.ones_like(a) for a in params]
        ids = [id(p.data) for p in lparams]
        for p, g in zip(lparams, grads):
            p.grad = g.copy()
        opt.step()
        for p, g, i in zip(lparams, grads, ids):
            assert id(p.data) == i and np.array_equal(p.grad, g), kind.__name__
        assert math.isfinite(sum(float(np.abs(p.data).sum()) for p in lparams))
