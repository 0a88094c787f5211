"""Click-through-rate models: the FM identity against the pairwise sum, Dice against its formula,
DeepFM, DCN-v2 (full rank, low rank, a mixture of experts, stacked and parallel) and DIN
against float64 torch rewrites (outputs and gradients), the low-rank cross at full rank against
the full-rank one, DIN's padding against a loop over behaviours, save/load, errors and the
README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, run_readme_section
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models import DIN, DCNv2, DeepFM, Dice, fm_interaction


@pytest.fixture(autouse=True)
def _float64():
    lamina.set_default_dtype(np.float64)


def _randomize(model, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data[...] = rng.normal(0, scale, param.shape)


def _run(model, *inputs):
    """Logits and gradients (name -> array) of the BCE loss against fixed labels."""
    model.zero_grad()
    logits = model(*inputs)
    labels = (np.arange(logits.shape[0]) % 2).astype(np.float64)
    F.binary_cross_entropy(logits, labels, from_logits=True).backward()
    return logits.numpy(), labels


def _torch_params(model):
    return {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}


def _check(model, p, expected, labels, logits):
    TF.binary_cross_entropy_with_logits(expected, torch.tensor(labels)).backward()
    assert_close(logits, expected.detach().numpy(), 1e-12, "logits")
    for name, param in model.named_parameters():
        if p[name].grad is None:                              # a part the configuration leaves unused
            assert param.grad is None or not np.any(param.grad), name
            continue
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=name)


def _torch_dice(x, alpha, eps=1e-8):
    mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + eps))
    return p * x + (1 - p) * alpha * x


def _torch_mlp(x, p, prefix, hidden, activation, out=True):
    """Dense layers ``dense``, ``dense_1`` ... with ``activation`` after each hidden one."""
    names = [f"{prefix}.dense" + ("" if k == 0 else f"_{k}") for k in range(hidden + int(out))]
    for k, name in enumerate(names):
        x = x @ p[f"{name}.weight"] + p[f"{name}.bias"]
        if k < hidden:
            if activation == "relu":
                x = torch.relu(x)
            else:
                x = _torch_dice(x, p[f"{prefix}.dice" + ("" if k == 0 else f"_{k}") + ".alpha"])
    return x


def _field_rows(ids, field_dims):
    return torch.tensor(ids + np.concatenate([[0], np.cumsum(field_dims)[:-1]]))


def test_fm_interaction_equals_the_pairwise_sum():
    e = np.random.default_rng(0).normal(size=(4, 5, 3))
    pairwise = sum(np.einsum("bk,bk->b", e[:, i], e[:, j]) for i in range(5) for j in range(i + 1, 5))
    assert_close(fm_interaction(e).numpy(), pairwise, 1e-12, "FM identity")
    check_gradients(lambda t: fm_interaction(t), e)
    with pytest.raises(ShapeError, match="fm_interaction: expected embeddings of shape"):
        fm_interaction(e[0])


def test_dice_equals_its_formula_in_training_and_evaluation():
    rng = np.random.default_rng(1)
    dice = Dice(momentum=0.5)
    x = rng.normal(2.0, 3.0, size=(6, 4))
    dice.build((None, 4))
    dice.alpha.data[...] = rng.normal(size=4)
    alpha = torch.tensor(dice.alpha.data, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out = dice(x)
    (out ** 2).sum().backward()
    expected = _torch_dice(xt, alpha)
    (expected ** 2).sum().backward()
    assert_close(out.numpy(), expected.detach().numpy(), 1e-12, "Dice training")
    assert_close(dice.alpha.grad, alpha.grad.numpy(), 1e-10, "Dice alpha grad")
    # p(s) by hand for one entry
    s, mu, sd = x[0, 0], x[:, 0].mean(), np.sqrt(x[:, 0].var() + 1e-8)
    p = 1 / (1 + np.exp(-(s - mu) / sd))
    assert_close(out.numpy()[0, 0], p * s + (1 - p) * dice.alpha.data[0] * s, 1e-12, "Dice entry")
    assert_close(dice.running_mean, 0.5 * x.mean(axis=0), 1e-12, "running mean")
    assert_close(dice.running_var, 0.5 + 0.5 * x.var(axis=0), 1e-12, "running var")
    dice.eval()
    one = dice(x[:1]).numpy()
    p = 1 / (1 + np.exp(-(x[:1] - dice.running_mean) / np.sqrt(dice.running_var + 1e-8)))
    assert_close(one, p * x[:1] + (1 - p) * dice.alpha.data * x[:1], 1e-12, "Dice evaluation")


@pytest.mark.parametrize("num_dense", [0, 2])
def test_deepfm_matches_torch(num_dense):
    field_dims, ids = (3, 4, 2), np.array([[0, 3, 1], [2, 0, 0], [1, 1, 1], [2, 3, 0]])
    model = DeepFM(field_dims, embed_dim=3, mlp_dims=(5, 4), num_dense=num_dense)
    _randomize(model)
    dense = np.random.default_rng(2).normal(size=(4, num_dense)) if num_dense else None
    logits, labels = _run(model, ids, dense)
    p = _torch_params(model)
    rows = _field_rows(ids, field_dims)
    e = p["embedding.table.weight"][rows]                                   # (B, F, k)
    pairs = sum((e[:, i] * e[:, j]).sum(1) for i in range(3) for j in range(i + 1, 3))
    first = p["first_order.table.weight"][rows].sum(dim=(1, 2)) + p["bias"]
    x = e.reshape(4, -1)
    if num_dense:
        x = torch.cat([x, torch.tensor(dense)], dim=1)
        first = first + (torch.tensor(dense) @ p["dense_linear.weight"])[:, 0]
    expected = first + pairs + _torch_mlp(x, p, "deep", 2, "relu")[:, 0]
    _check(model, p, expected, labels, logits)


def _torch_cross(p, name, x0, x, low_rank, num_experts):
    if low_rank is None:
        return x0 * (x @ p[f"{name}.weight"] + p[f"{name}.bias"]) + x
    u, v, b = p[f"{name}.u"], p[f"{name}.v"], p[f"{name}.bias"]
    experts = [x0 * (x @ v[i] @ u[i].T + b[i]) for i in range(num_experts)]       # W_i = U_i V_i^T
    if num_experts == 1:
        return experts[0] + x
    gates = torch.softmax(x @ p[f"{name}.gate"], dim=-1)
    return sum(gates[:, i:i + 1] * experts[i] for i in range(num_experts)) + x


@pytest.mark.parametrize("structure,low_rank,num_experts", [("stacked", None, 1), ("parallel", None, 1),
                                                            ("stacked", 2, 1), ("parallel", 2, 3)])
def test_dcnv2_matches_torch(structure, low_rank, num_experts):
    field_dims, ids = (3, 4), np.array([[0, 3], [2, 0], [1, 1]])
    dense = np.random.default_rng(3).normal(size=(3, 1))
    model = DCNv2(field_dims, embed_dim=2, num_cross_layers=2, mlp_dims=(4,), structure=structure,
                  low_rank=low_rank, num_experts=num_experts, num_dense=1)
    _randomize(model, seed=4)
    logits, labels = _run(model, ids, dense)
    p = _torch_params(model)
    x0 = torch.cat([p["embedding.table.weight"][_field_rows(ids, field_dims)].reshape(3, -1),
                    torch.tensor(dense)], dim=1)
    x = x0
    for layer in range(2):
        x = _torch_cross(p, f"cross.{layer}", x0, x, low_rank, num_experts)
    if structure == "stacked":
        features = _torch_mlp(x, p, "deep", 1, "relu", out=False)
    else:
        features = torch.cat([x, _torch_mlp(x0, p, "deep", 1, "relu", out=False)], dim=1)
    expected = (features @ p["head.weight"] + p["head.bias"])[:, 0]
    _check(model, p, expected, labels, logits)


def test_low_rank_cross_at_full_rank_equals_the_full_rank_cross():
    field_dims, ids = (3, 4), np.array([[0, 3], [2, 0], [1, 1]])
    full = DCNv2(field_dims, embed_dim=2, num_cross_layers=2, mlp_dims=(3,))
    low = DCNv2(field_dims, embed_dim=2, num_cross_layers=2, mlp_dims=(3,), low_rank=4)
    _randomize(low, seed=5)
    full.load_state_dict({k: v for k, v in low.state_dict().items() if not k.startswith("cross")}, strict=False)
    for a, b in zip(full.cross, low.cross):
        a.weight.data[...] = b.v.data[0] @ b.u.data[0].T                # W^T = (U V^T)^T
        a.bias.data[...] = b.bias.data[0]
    assert_close(full(ids).numpy(), low(ids).numpy(), 1e-12, "full-rank vs low-rank cross")


def _torch_din(p, history, candidate, hist_cat, cand_cat, dense, use_attention=True):
    """DIN by a loop over each user's unpadded behaviours (attention MLP with Dice on the batch of
    all unpadded behaviours, as the model batches them)."""
    items, cats = p["items.weight"], p["categories.weight"]
    valid = [(b, j) for b in range(history.shape[0]) for j in range(history.shape[1]) if history[b, j] != 0]
    emb = {(b, j): torch.cat([items[history[b, j]], cats[hist_cat[b, j]]]) for b, j in valid}
    target = [torch.cat([items[candidate[b]], cats[cand_cat[b]]]) for b in range(history.shape[0])]
    features = torch.stack([torch.cat([emb[k], target[k[0]], emb[k] - target[k[0]], emb[k] * target[k[0]]])
                            for k in valid])
    scores = _torch_mlp(features, p, "attention", 1, "dice")[:, 0] if use_attention else [1.0] * len(valid)
    interest = [torch.zeros(8, dtype=torch.float64) for _ in target]
    for (b, j), w in zip(valid, scores):
        interest[b] = interest[b] + w * emb[(b, j)]
    x = torch.cat([torch.stack(interest), torch.stack(target), torch.tensor(dense)], dim=1)
    return _torch_mlp(x, p, "mlp", 2, "dice")[:, 0]


@pytest.mark.parametrize("use_attention", [True, False])
def test_din_matches_a_loop_over_behaviours(use_attention):
    history = np.array([[3, 5, 0, 0], [1, 2, 4, 7], [6, 0, 0, 0], [2, 2, 8, 0]])
    hist_cat = np.array([[1, 2, 0, 0], [0, 1, 2, 1], [2, 0, 0, 0], [1, 1, 0, 0]])
    candidate, cand_cat = np.array([5, 9, 1, 3]), np.array([2, 0, 1, 1])
    dense = np.random.default_rng(9).normal(size=(4, 2))
    model = DIN(10, embed_dim=4, attention_mlp=(6,), mlp_dims=(5, 3), category_vocab=3, num_dense=2,
                use_attention=use_attention)
    _randomize(model, seed=6)
    logits, labels = _run(model, history, candidate, hist_cat, cand_cat, dense)
    p = _torch_params(model)
    expected = _torch_din(p, history, candidate, hist_cat, cand_cat, dense, use_attention)
    _check(model, p, expected, labels, logits)


def test_din_ignores_padded_positions():
    history, candidate = np.array([[3, 5, 0, 0], [1, 0, 0, 0]]), np.array([5, 9])
    cats, cand_cats = np.array([[1, 2, 0, 0], [0, 0, 0, 0]]), np.array([2, 0])
    model = DIN(10, embed_dim=4, attention_mlp=(6,), mlp_dims=(5,), category_vocab=3)
    _randomize(model, seed=7)
    base = model(history, candidate, cats, cand_cats).numpy()
    other_cats = np.array([[1, 2, 2, 1], [0, 1, 2, 2]])                 # only padded slots differ
    assert_close(model(history, candidate, other_cats, cand_cats).numpy(), base, 1e-12, "padded categories")
    longer = np.concatenate([history, np.zeros((2, 3), dtype=int)], axis=1)
    longer_cats = np.concatenate([cats, np.ones((2, 3), dtype=int)], axis=1)
    assert_close(model(longer, candidate, longer_cats, cand_cats).numpy(), base, 1e-12, "more padding")
    weights = model.attention_weights(model._embed(history, cats, "history"),
                                      model._embed(candidate, cand_cats, "candidate"), history != 0).numpy()
    assert np.all(weights[history == 0] == 0) and np.all(weights[history != 0] != 0)


def test_gradcheck_of_the_parameters():
    ids = np.array([[0, 3], [2, 0], [1, 2]])
    history, candidate = np.array([[3, 5, 0], [1, 2, 0], [4, 0, 0]]), np.array([5, 1, 2])
    for model, inputs in [(DeepFM((3, 4), 2, (3,), num_dense=1), (ids, np.ones((3, 1)))),
                          (DCNv2((3, 4), 2, 1, (3,), low_rank=2, num_experts=2), (ids,)),
                          (DIN(6, 2, (3,), (3,)), (history, candidate))]:
        _randomize(model, seed=8)
        assert lamina.gradcheck(lambda *_, m=model, x=inputs: (m(*x) ** 2).sum(), *model.parameters())


def test_save_and_load_round_trip(tmp_path):
    ids = np.array([[0, 3, 1], [2, 0, 0]])
    history, candidate = np.array([[3, 5, 0], [1, 0, 0]]), np.array([5, 9])
    cases = [(DeepFM((3, 4, 2), 3, (4,), num_dense=1), (ids, np.ones((2, 1)))),
             (DCNv2((3, 4, 2), 2, 1, (4,), structure="parallel", low_rank=2, num_experts=2), (ids,)),
             (DIN(10, 4, (6,), (5,)), (history, candidate))]
    for k, (model, inputs) in enumerate(cases):
        _randomize(model, seed=k)
        model.eval()
        path = tmp_path / f"model{k}.safetensors"
        lamina.save(model, path)
        twin = lamina.load(path)
        twin.eval()
        assert type(twin) is type(model) and twin.get_config() == model.get_config()
        assert np.array_equal(twin(*inputs).numpy(), model(*inputs).numpy())


def test_errors_name_the_model():
    model = DeepFM((3, 4), 2, (3,))
    with pytest.raises(ValueError, match=r"DeepFM: field 1 has id 4, out of range \[0, 4\)"):
        model(np.array([[0, 4]]))
    with pytest.raises(ShapeError, match=r"DeepFM: field ids must have shape \(batch, 2\)"):
        model(np.array([[0, 1, 2]]))
    with pytest.raises(ShapeError, match="DeepFM: built with num_dense=0, but dense features were given"):
        model(np.array([[0, 1]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="DCNv2: structure must be 'stacked' or 'parallel'"):
        DCNv2((3,), structure="side")
    with pytest.raises(ValueError, match="DCNv2: a mixture of experts"):
        DCNv2((3,), num_experts=2)
    with pytest.raises(ValueError, match="DIN: activation must be 'relu', 'prelu' or 'dice'"):
        DIN(5, activation="tanh")
    with pytest.raises(ShapeError, match="DIN: built with category_vocab, so history categories are needed"):
        DIN(5, 2, (3,), (3,), category_vocab=2)(np.array([[1, 2]]), np.array([3]))


def test_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, names = run_readme_section("Click-through-rate models")
    assert printed.split("\n")[:2] == ["(4,) (4,) (4,)", "True"]
    assert names["twin"].get_config() == names["deepfm"].get_config()
    assert (tmp_path / "deepfm.safetensors").exists()
