"""Multi-task recommenders (shared-bottom, MMoE, PLE): MMoE and PLE against float64 torch
rewrites of the published formulas with the same weights (outputs, dense-input and parameter
gradients), float64 gradient checks, gates that sum to one, PLE with one level and no task
experts equal to MMoE, the weighted loss, saving, input errors, and the MMoE paper's synthetic
two-task regression as the learning test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo_checks import check_config_and_save_load

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina import models, optim
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.train.task_weighting import EqualWeighting

FIELDS = (5, 3, 4)
IDS = np.array([[1, 2, 0], [4, 0, 3], [0, 1, 1], [3, 2, 2]])


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _perturb(model, seed=3, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


# -- torch rewrites of the published formulas --------------------------------------------------
def _torch_input(w, ids, dense):
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(FIELDS)[:-1]]))
    e = w["embedding.table.weight"][torch.tensor(ids) + offsets]
    return torch.cat([e.reshape(len(ids), -1), dense], dim=1)


def _torch_experts(w, prefix, x, layers):
    """Each expert e: h <- relu(h W_j[e] + b_j[e]); x (B, D) -> (B, E, d)."""
    h = x[:, None, :].expand(-1, w[f"{prefix}.kernel0"].shape[0], -1)
    for j in range(layers):
        h = torch.relu(torch.einsum("bed,edo->beo", h, w[f"{prefix}.kernel{j}"]) + w[f"{prefix}.bias{j}"])
    return h


def _torch_tower(w, k, h):
    hidden = torch.relu(h @ w[f"towers.{k}.dense.weight"] + w[f"towers.{k}.dense.bias"])
    return (hidden @ w[f"towers.{k}.dense_1.weight"] + w[f"towers.{k}.dense_1.bias"])[:, 0]


def torch_mmoe(w, ids, dense, num_tasks, layers):
    """f^k(x) = sum_i softmax(W_gk x)_i f_i(x),  y_k = h^k(f^k(x))."""
    x = _torch_input(w, ids, dense)
    experts = _torch_experts(w, "experts", x, layers)
    out = []
    for k in range(num_tasks):
        g = torch.softmax(x @ w["gates"][k], dim=-1)
        out.append(_torch_tower(w, k, (g[:, :, None] * experts).sum(1)))
    return out


def torch_ple(w, ids, dense, num_tasks, levels, layers):
    """CGC levels: task k's gate mixes [its experts ; shared experts]; the shared gate (levels
    before the last) mixes every expert of the level."""
    x = _torch_input(w, ids, dense)
    q, qs = [x] * num_tasks, x
    for j in range(levels):
        own = [_torch_experts(w, f"task_groups.{j * num_tasks + k}", q[k], layers) for k in range(num_tasks)]
        shared = _torch_experts(w, f"shared_groups.{j}", qs, layers)
        new = []
        for k in range(num_tasks):
            g = torch.softmax(q[k] @ w[f"gate{j}_{k}"], dim=-1)
            new.append((g[:, :, None] * torch.cat([own[k], shared], dim=1)).sum(1))
        if j < levels - 1:
            g = torch.softmax(qs @ w[f"gate{j}_shared"], dim=-1)
            qs = (g[:, :, None] * torch.cat([*own, shared], dim=1)).sum(1)
        q = new
    return [_torch_tower(w, k, q[k]) for k in range(num_tasks)]


def _check_against_torch(model, reference):
    _perturb(model)
    dense = randn(len(IDS), 2, seed=1)
    mix = randn(len(model.tasks), len(IDS), seed=2)
    dense_l = lamina.tensor(dense, requires_grad=True)
    out = model(IDS, dense_l)
    total = sum((out[t] * lamina.tensor(mix[k])).sum() for k, t in enumerate(model.tasks))
    total.backward()
    params = dict(model.named_parameters())
    w = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in params.items()}
    dense_t = torch.tensor(dense, requires_grad=True)
    ref = reference(w, IDS, dense_t)
    for k, t in enumerate(model.tasks):
        assert_close(out[t].numpy(), ref[k].detach().numpy(), 1e-10, f"task {t}")
    sum((r * torch.tensor(mix[k])).sum() for k, r in enumerate(ref)).backward()
    assert_close(np.asarray(dense_l.grad), dense_t.grad.numpy(), 1e-9, "dense gradient")
    for n, p in params.items():
        assert_close(np.asarray(p.grad), w[n].grad.numpy(), 1e-9, f"gradient of {n}")


def test_mmoe_matches_torch_rewrite(float64):
    model = models.MMoE(FIELDS, ("ctr", "cvr", "like"), num_experts=3, expert_units=(5, 4), tower_units=(3,),
                        embed_dim=2, num_dense=2)
    _check_against_torch(model, lambda w, ids, d: torch_mmoe(w, ids, d, 3, 2))


def test_ple_matches_torch_rewrite(float64):
    model = models.PLE(FIELDS, ("ctr", "cvr"), num_levels=3, shared_experts=2, task_experts=2, expert_units=(4,),
                       tower_units=(3,), embed_dim=2, num_dense=2)
    _check_against_torch(model, lambda w, ids, d: torch_ple(w, ids, d, 2, 3, 1))


@pytest.mark.parametrize("make", [
    lambda: models.SharedBottom(FIELDS, ("a", "b"), bottom_units=(4,), tower_units=(3,), embed_dim=2, num_dense=2),
    lambda: models.MMoE(FIELDS, ("a", "b"), num_experts=2, expert_units=(4,), tower_units=(3,), embed_dim=2,
                        num_dense=2),
    lambda: models.PLE(FIELDS, ("a", "b"), num_levels=2, shared_experts=1, task_experts=1, expert_units=(3,),
                       tower_units=(2,), embed_dim=2, num_dense=2)])
def test_gradient_check(float64, make):
    model = make()
    _perturb(model, scale=0.1)

    def fn(dense):
        out = model(IDS, dense)
        return out["a"] * 1.3 - out["b"] * 0.7

    assert check_gradients(fn, randn(len(IDS), 2, seed=4))


def test_gates_sum_to_one_and_have_their_sizes():
    mmoe = models.MMoE(FIELDS, ("ctr", "cvr"), num_experts=3, embed_dim=2)
    _, gates = mmoe(IDS, return_gates=True)
    assert sorted(gates) == ["ctr", "cvr"]
    for g in gates.values():
        assert g.shape == (4, 3) and (g.numpy() > 0).all()
        np.testing.assert_allclose(g.numpy().sum(axis=1), 1.0, rtol=1e-6)
    ple = models.PLE(FIELDS, ("ctr", "cvr", "like"), num_levels=2, shared_experts=2, task_experts=3, embed_dim=2)
    _, levels = ple(IDS, return_gates=True)
    assert [sorted(level) for level in levels] == [["ctr", "cvr", "like", "shared"], ["ctr", "cvr", "like"]]
    assert levels[0]["shared"].shape == (4, 3 * 3 + 2) and levels[1]["ctr"].shape == (4, 3 + 2)
    for level in levels:
        for g in level.values():
            np.testing.assert_allclose(g.numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_ple_with_one_level_and_no_task_experts_is_mmoe():
    """PLE(num_levels=1, task_experts=0, shared_experts=n) with MMoE's weights gives MMoE's
    outputs and gates: gate{0}_k = gates[k], shared_groups.0 = experts."""
    mmoe = models.MMoE(FIELDS, ("ctr", "cvr"), num_experts=3, expert_units=(4, 3), tower_units=(2,), embed_dim=2)
    ple = models.PLE(FIELDS, ("ctr", "cvr"), num_levels=1, shared_experts=3, task_experts=0, expert_units=(4, 3),
                     tower_units=(2,), embed_dim=2)
    _perturb(mmoe)
    state = mmoe.state_dict()
    renamed = {k.replace("experts.", "shared_groups.0."): v for k, v in state.items() if k != "gates"}
    renamed.update({f"gate0_{k}": state["gates"][k] for k in range(2)})
    assert sorted(renamed) == sorted(ple.state_dict())
    ple.load_state_dict(renamed)
    (out_m, gates_m), (out_p, gates_p) = mmoe(IDS, return_gates=True), ple(IDS, return_gates=True)
    for t in ("ctr", "cvr"):
        np.testing.assert_allclose(out_p[t].numpy(), out_m[t].numpy(), rtol=1e-6)
        np.testing.assert_allclose(gates_p[0][t].numpy(), gates_m[t].numpy(), rtol=1e-6)


def test_loss_is_the_weighted_sum_of_bce_and_mse():
    model = models.MMoE(FIELDS, ("click", "watch"), num_experts=2, embed_dim=2, task_types=("binary", "regression"))
    out = model(IDS)
    targets = {"click": np.array([1, 0, 0, 1]), "watch": np.array([0.5, 2.0, -1.0, 0.0])}
    z, v = out["click"].numpy().astype(np.float64), out["watch"].numpy().astype(np.float64)
    bce = np.mean(np.logaddexp(0, z) - targets["click"] * z)
    mse = np.mean((v - targets["watch"]) ** 2)
    losses = model.task_losses(out, targets)
    np.testing.assert_allclose([float(losses["click"].numpy()), float(losses["watch"].numpy())], [bce, mse],
                               rtol=1e-5)
    np.testing.assert_allclose(float(model.loss(out, targets, {"watch": 0.25}).numpy()), bce + 0.25 * mse, rtol=1e-5)
    np.testing.assert_allclose(float(EqualWeighting(model.tasks)(losses).numpy()), bce + mse, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: models.SharedBottom(FIELDS, ("a", "b"), bottom_units=(4,), tower_units=(3,), embed_dim=2, num_dense=2),
    lambda: models.MMoE(FIELDS, ("a", "b"), num_experts=2, expert_units=(4,), embed_dim=2, num_dense=2,
                        task_types="regression"),
    lambda: models.PLE(FIELDS, ("a", "b", "c"), num_levels=2, shared_experts=1, task_experts=2, expert_units=(3, 2),
                       embed_dim=2, num_dense=2)])
def test_shapes_and_save_load(make, tmp_path):
    model = make()
    out = model(IDS, randn(4, 2).astype(np.float32))
    assert sorted(out) == sorted(model.tasks) and all(v.shape == (4,) and v.dtype == np.float32 for v in out.values())
    _perturb(model, scale=0.1)
    model.eval()
    copy = lamina.nn.layer_from_config(lamina.nn.layer_to_config(model))
    assert copy.get_config() == model.get_config()
    lamina.save(model, tmp_path / "m.safetensors")
    loaded = lamina.load(tmp_path / "m.safetensors")
    dense = randn(4, 2, seed=5).astype(np.float32)
    with no_grad():
        a, b = model(IDS, dense), loaded(IDS, dense)
    for t in model.tasks:
        np.testing.assert_array_equal(a[t].numpy(), b[t].numpy())


def test_dense_only_input_and_save(tmp_path):
    model = models.MMoE((), ("a", "b"), num_experts=2, expert_units=(3,), num_dense=4)
    out = model(None, randn(5, 4).astype(np.float32))
    assert out["a"].shape == (5,)
    check_config_and_save_load(models.ExpertGroup(3, 4, (5, 2)), randn(2, 4).astype(np.float32), tmp_path / "e")


def test_parameter_counts():
    """D = 3 fields * 2 + 2 dense = 8; expert (8*4+4), tower (4*3+3 + 3+1), gate 8*n."""
    mmoe = models.MMoE(FIELDS, ("a", "b"), num_experts=3, expert_units=(4,), tower_units=(3,), embed_dim=2,
                       num_dense=2)
    assert mmoe.num_parameters() == 12 * 2 + 3 * 36 + 2 * 8 * 3 + 2 * 19
    ple = models.PLE(FIELDS, ("a", "b"), num_levels=2, shared_experts=1, task_experts=2, expert_units=(4,),
                     tower_units=(3,), embed_dim=2, num_dense=2)
    level0 = 5 * 36 + 2 * 8 * 3 + 8 * 5
    level1 = 5 * (4 * 4 + 4) + 2 * 4 * 3
    assert ple.num_parameters() == 12 * 2 + level0 + level1 + 2 * 19


def test_errors():
    with pytest.raises(ShapeError, match=r"MMoE: field ids must have shape \(batch, 3\), got \(4, 2\)"):
        models.MMoE(FIELDS)(IDS[:, :2])
    with pytest.raises(ValueError, match="MMoE: field 0 has id 5"):
        models.MMoE(FIELDS)(IDS + np.array([4, 0, 0]))
    with pytest.raises(ShapeError, match=r"PLE: dense features must have shape \(4, 2\), got \(4, 3\)"):
        models.PLE(FIELDS, num_dense=2)(IDS, randn(4, 3))
    with pytest.raises(ValueError, match="tasks must be distinct"):
        models.SharedBottom(FIELDS, ("a", "a"))
    with pytest.raises(ValueError, match="task_types must be one of"):
        models.MMoE(FIELDS, ("a", "b"), task_types=("binary",))
    with pytest.raises(ValueError, match="PLE: a gate needs at least one expert"):
        models.PLE(FIELDS, shared_experts=0, task_experts=0)
    with pytest.raises(ValueError, match="num_dense must be > 0"):
        models.MMoE(())
    with pytest.raises(ShapeError, match="field_dims=()"):
        models.MMoE((), num_dense=2)(IDS, randn(4, 2))
    model = models.MMoE(FIELDS, ("a", "b"))
    with pytest.raises(ValueError, match=r"targets must be a dict with one entry per task \['a', 'b'\]"):
        model.task_losses(model(IDS), {"a": np.zeros(4)})
    with pytest.raises(ShapeError, match=r"task 'b' targets must have shape \(4,\), got \(4, 1\)"):
        model.task_losses(model(IDS), {"a": np.zeros(4), "b": np.zeros((4, 1))})


# -- the MMoE paper's synthetic experiment -------------------------------------------------------
def synthetic_tasks(n: int, correlation: float, seed: int, dim: int = 16, terms: int = 10):
    """Ma et al. 2018, section 3.2: orthogonal unit u_1, u_2; w_1 = c u_1, w_2 = c (p u_1 +
    sqrt(1 - p^2) u_2) (c = 1); y_i = w_i^T x + sum_j sin(alpha_j w_i^T x + beta_j) + noise,
    x ~ N(0, I). The label correlation falls with p."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    weights = (u[0], correlation * u[0] + np.sqrt(1 - correlation ** 2) * u[1])
    alpha, beta = rng.normal(size=terms), rng.normal(size=terms)
    x = rng.normal(size=(n, dim))
    y = {task: (x @ w + np.sin(np.outer(x @ w, alpha) + beta).sum(1) + rng.normal(scale=0.1, size=n))
         for task, w in zip(("a", "b"), weights)}
    return x.astype(np.float32), {task: v.astype(np.float32) for task, v in y.items()}


def test_readme_example():
    printed, names = run_readme_section("Multi-task recommenders")
    assert printed.split("\n")[:2] == ["(4,) (4, 3) True", "()"]
    assert names["ple"].tasks == ("click", "watch_time")


def _fit_and_test(make, seed: int) -> float:
    """Adam (lr 0.01, batches of 128, 14 epochs) on 2000 rows at correlation p = 0; the sum of
    the two tasks' test mean squared errors on 1000 more."""
    x, y = synthetic_tasks(3000, 0.0, seed)
    lamina.backend.manual_seed(seed)
    model = make()
    opt, rng = optim.Adam(model, lr=0.01), np.random.default_rng(seed)
    for _ in range(14):
        for rows in np.array_split(rng.permutation(2000), 2000 // 128):
            loss = model.loss(model(None, x[rows]), {task: v[rows] for task, v in y.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    with no_grad():
        out = model(None, x[2000:])
    return sum(float(np.mean((out[task].numpy() - y[task][2000:]) ** 2)) for task in y)


def test_mmoe_and_ple_beat_shared_bottom_on_uncorrelated_tasks():
    """Ma et al. 2018, figure 3: at low task correlation the shared bottom loses to MMoE. Each
    model hands its towers 4 features from about 640 weights (shared bottom 16 -> 32 -> 4;
    four experts 16 -> 8 -> 4; PLE two shared experts and one per task)."""
    common = {"tower_units": (8,), "num_dense": 16, "task_types": "regression"}
    makers = {
        "shared": lambda: models.SharedBottom((), ("a", "b"), bottom_units=(32, 4), **common),
        "mmoe": lambda: models.MMoE((), ("a", "b"), num_experts=4, expert_units=(8, 4), **common),
        "ple": lambda: models.PLE((), ("a", "b"), shared_experts=2, task_experts=1, expert_units=(8, 4), **common)}
    mse = {name: np.mean([_fit_and_test(make, seed) for seed in (0, 1, 2)]) for name, make in makers.items()}
    # measured (mean over seeds 0, 1, 2; OpenBLAS's own and Haswell kernels alike): shared 0.786, MMoE 0.424,
    # PLE 0.349
    assert mse["mmoe"] < 0.8 * mse["shared"] and mse["ple"] < 0.8 * mse["shared"], mse
