"""Test-time adaptation (BN statistics, Tent), invariance penalties (IRMv1, V-REx), Group DRO
and the colored-digits / corrupted-digits benchmarks."""

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import nn
from lamina.autograd import Tensor
from lamina.data import load_digits
from lamina.data.spurious import colored_digits, corrupt_images
from lamina.functional.invariance_penalties import irm_penalty, vrex_penalty
from lamina.functional.loss import categorical_cross_entropy
from lamina.optim import Adam
from lamina.train.group_robust import GroupDRO, group_accuracies, jtt_weights
from lamina.train.test_time_adaptation import Tent, adapt_batchnorm, marginal_entropy, memo_predict, prediction_entropy


def torch_irm_penalty(logits, labels, unbiased):
    def slope(z, y):
        scale = torch.tensor(1.0, dtype=z.dtype, requires_grad=True)
        risk = torch.nn.functional.cross_entropy(z * scale, y)
        return torch.autograd.grad(risk, [scale], create_graph=True)[0]
    if not unbiased:
        return slope(logits, labels) ** 2
    half = len(labels) // 2
    return slope(logits[:half], labels[:half]) * slope(logits[half:], labels[half:])


@pytest.mark.parametrize("unbiased", [False, True])
def test_irm_penalty_and_its_gradient_match_torch(unbiased):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    z = Tensor(logits, requires_grad=True, dtype=np.float64)
    penalty = irm_penalty(z, labels, unbiased=unbiased)
    penalty.backward()
    zt = torch.tensor(logits, requires_grad=True)
    expected = torch_irm_penalty(zt, torch.tensor(labels), unbiased)
    expected.backward()
    assert penalty.item() > 0
    np.testing.assert_allclose(penalty.item(), expected.item(), rtol=1e-10)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_irm_penalty_gradient_reaches_model_weights():
    lamina.manual_seed(0)
    layer = nn.Dense(3)
    x = np.random.default_rng(1).standard_normal((6, 4))
    layer(Tensor(x[:1]))
    layer.double()
    labels = np.array([0, 1, 2, 0, 1, 2])
    irm_penalty(layer(Tensor(x, dtype=np.float64)), labels).backward()
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    torch_irm_penalty(torch.tensor(x) @ wt + bt, torch.tensor(labels), False).backward()
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_vrex_penalty_by_hand():
    risks = [Tensor(np.array(r), requires_grad=True, dtype=np.float64) for r in (1.0, 2.0, 4.0)]
    penalty = vrex_penalty(risks)
    penalty.backward()
    centre = 7.0 / 3.0
    assert penalty.item() == pytest.approx(((1 - centre) ** 2 + (2 - centre) ** 2 + (4 - centre) ** 2) / 3)
    for r, value in zip(risks, (1.0, 2.0, 4.0)):
        assert float(r.grad) == pytest.approx(2 * (value - centre) / 3)


def test_group_dro_weights_follow_the_exponentiated_gradient_step():
    rng = np.random.default_rng(0)
    counts = np.array([50, 5, 20])
    dro = GroupDRO(3, eta=0.5, adjustment=2.0, group_counts=counts)
    q = np.full(3, 1 / 3)
    for step in range(4):
        losses = rng.random(10) * 3
        groups = rng.integers(0, 2 if step == 0 else 3, 10)    # group 2 absent at first
        group_means = np.array([losses[groups == g].mean() if np.any(groups == g) else 0.0 for g in range(3)])
        q = q * np.exp(0.5 * (group_means + 2.0 / np.sqrt(counts)))
        q /= q.sum()
        per_sample = Tensor(losses, requires_grad=True, dtype=np.float64)
        robust = dro.loss(per_sample, groups)
        robust.backward()
        np.testing.assert_allclose(dro.q, q, rtol=1e-12)
        assert robust.item() == pytest.approx(float(q @ group_means))
        np.testing.assert_allclose(per_sample.grad, q[groups] / np.bincount(groups, minlength=3)[groups])


def small_bn_model(seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential([nn.Dense(6), nn.BatchNorm(), nn.ReLU(), nn.Dense(4), nn.BatchNorm(), nn.Dense(3)])
    model(Tensor(np.zeros((2, 5), dtype=np.float32)))
    return model


def test_adapt_batchnorm_sets_target_moments_and_mixes_with_a_prior():
    model = small_bn_model()
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm):
            layer.running_mean = layer.running_mean + 0.5
            layer.running_var = layer.running_var * 3.0
    bn1 = model.layers[1]
    x = np.random.default_rng(2).standard_normal((16, 5)).astype(np.float32) * 2 + 1
    h = x @ model.layers[0].weight.data.astype(np.float64) + model.layers[0].bias.data
    source_mean, source_var = bn1.running_mean.copy(), bn1.running_var.copy()
    adapt_batchnorm(model, x, prior=8.0)
    np.testing.assert_allclose(bn1.running_mean, (8 * source_mean + 16 * h.mean(0)) / 24, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn1.running_var, (8 * source_var + 16 * h.var(0)) / 24, rtol=1e-5)
    adapt_batchnorm(model, x)
    np.testing.assert_allclose(bn1.running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn1.running_var, h.var(0), rtol=1e-5)
    assert not model.training
    evaluated = model(Tensor(x)).data
    model.train()
    batch_mode = model(Tensor(x)).data
    np.testing.assert_allclose(evaluated, batch_mode, rtol=1e-4, atol=1e-5)


def test_tent_updates_only_batchnorm_affine_parameters_and_lowers_entropy():
    model = small_bn_model()
    model.eval()
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    buffers = {name: np.array(b).copy() for name, b in model.named_buffers()}
    x = Tensor(np.random.default_rng(3).standard_normal((32, 5)).astype(np.float32))
    tent = Tent(model, lr=0.05, steps=15)
    tent(x)
    changed = {name for name, p in model.named_parameters() if not np.array_equal(p.data, before[name])}
    affine = {name for name, p in model.named_parameters()
              if any(p is q for q in tent.params)}
    assert changed == affine and len(affine) == 4
    for name, b in model.named_buffers():
        assert np.array_equal(b, buffers[name])
    assert tent.losses[-1] < tent.losses[0] - 1e-3
    assert all(p.trainable for p in model.parameters())
    episodic = Tent(model, lr=0.05, steps=1, episodic=True)
    start = [p.data.copy() for p in episodic.params]
    episodic(x)
    episodic(x)
    assert episodic.losses[0] == pytest.approx(episodic.losses[1])
    assert not all(np.array_equal(p.data, s) for p, s in zip(episodic.params, start))


def test_entropy_filtering_keeps_only_confident_samples():
    model = small_bn_model()
    x = Tensor(np.random.default_rng(4).standard_normal((16, 5)).astype(np.float32))
    entropies = prediction_entropy(model(x)).data
    threshold = float(np.median(entropies))
    tent = Tent(model, lr=0.0, steps=1, entropy_threshold=threshold)
    tent(x)
    model.eval()
    expected = entropies[entropies < threshold].mean()
    model.train()
    assert tent.losses[0] == pytest.approx(float(expected), rel=1e-4)


def test_clear_errors():
    plain = nn.Sequential([nn.Dense(3)])
    plain(Tensor(np.zeros((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="adapt_batchnorm.*no BatchNorm"):
        adapt_batchnorm(plain, np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="Tent.*no BatchNorm"):
        Tent(plain)
    dro = GroupDRO(3)
    with pytest.raises(ValueError, match=r"GroupDRO: group ids must lie in \[0, 3\)"):
        dro.loss(Tensor(np.ones(2)), np.array([0, 3]))
    with pytest.raises(ValueError, match="at least 2 environments"):
        vrex_penalty([Tensor(np.array(1.0))])
    with pytest.raises(ValueError, match="even N"):
        irm_penalty(np.zeros((3, 2)), np.array([0, 1, 0]), unbiased=True)
    with pytest.raises(ValueError, match="at least 2 groups"):
        GroupDRO(1)


def test_colored_digits_correlations_and_groups():
    x, digits = load_digits(8)
    images, labels, colours, groups = colored_digits(x / 255.0, digits, 0.9, label_noise=0.25, seed=0)
    assert images.shape == (len(digits), 8, 8, 2)
    assert abs((colours == labels).mean() - 0.9) < 0.03
    assert abs((labels != (digits >= 5)).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(groups, 2 * labels + colours)
    rows = np.arange(len(digits))
    np.testing.assert_allclose(images[rows, ..., colours], x[..., 0] / 255.0, rtol=1e-6)
    assert not images[rows, ..., 1 - colours].any()


def shuffled_digits():
    x, digits = load_digits(8)
    order = np.random.default_rng(0).permutation(len(digits))
    return (x[order] / 255.0).astype(np.float32), digits[order]


def train_on_environments(method, envs, steps, weight=1e4, anneal=150, sample_weights=None):
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Flatten(), nn.Dense(32), nn.ReLU(), nn.Dense(2)])
    model(Tensor(envs[0][0][:2]))
    optimizer = Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    xs, ys, gs = (np.concatenate([e[i] for e in envs]) for i in (0, 1, 3))
    dro = GroupDRO(4, eta=0.1)
    for step in range(steps):
        optimizer.zero_grad()
        if method == "erm":
            loss = categorical_cross_entropy(model(Tensor(xs)), ys, from_logits=True)
        elif method == "weighted":
            per_sample = categorical_cross_entropy(model(Tensor(xs)), ys, from_logits=True, reduction="none")
            loss = (per_sample * Tensor(sample_weights / sample_weights.sum())).sum()
        elif method == "group_dro":
            loss = dro.loss(categorical_cross_entropy(model(Tensor(xs)), ys, from_logits=True, reduction="none"),
                            gs)
        else:
            risks, penalties = [], []
            for x, y, _, _ in envs:
                logits = model(Tensor(x))
                risks.append(categorical_cross_entropy(logits, y, from_logits=True))
                penalties.append(irm_penalty(logits, y) if method == "irm" else None)
            penalty = penalties[0] + penalties[1] if method == "irm" else vrex_penalty(risks)
            w = weight if step >= anneal else 1.0
            loss = (risks[0] + risks[1] + w * penalty) * (1.0 / w)
        loss.backward()
        optimizer.step()
    return model


def test_invariance_and_group_robustness_beat_erm_on_colored_digits():
    x, digits = shuffled_digits()
    envs = [colored_digits(x[:600], digits[:600], 0.95, 0.15, seed=1),
            colored_digits(x[600:1200], digits[600:1200], 0.85, 0.15, seed=2)]
    test_x, test_y, _, test_g = colored_digits(x[1200:], digits[1200:], 0.1, 0.15, seed=3)
    results = {}
    for method, steps in (("erm", 300), ("irm", 500), ("vrex", 500), ("group_dro", 300)):
        predictions = train_on_environments(method, envs, steps)(Tensor(test_x)).data.argmax(-1)
        results[method] = group_accuracies(predictions, test_y, test_g, 4)
    train_x, train_y = (np.concatenate([e[i] for e in envs]) for i in (0, 1))
    identification = train_on_environments("erm", envs, 40)(Tensor(train_x)).data.argmax(-1)
    weights = jtt_weights(identification, train_y, lambda_up=6.0)
    jtt = train_on_environments("weighted", envs, 300, sample_weights=weights)
    results["jtt"] = group_accuracies(jtt(Tensor(test_x)).data.argmax(-1), test_y, test_g, 4)
    print({m: (round(r["average"], 3), round(r["worst_group"], 3)) for m, r in results.items()})
    erm = results["erm"]
    assert erm["average"] < 0.5                      # colour, flipped at test, drives ERM
    best = max(("irm", "vrex", "group_dro", "jtt"), key=lambda m: results[m]["worst_group"])
    assert results[best]["worst_group"] > erm["worst_group"] + 0.1
    assert results[best]["average"] > erm["average"] + 0.1


def test_batchnorm_adaptation_and_tent_recover_accuracy_on_corrupted_digits():
    x, digits = shuffled_digits()
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Flatten(), nn.Dense(64), nn.BatchNorm(), nn.ReLU(), nn.Dense(10)])
    model(Tensor(x[:4]))
    optimizer = Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        for start in range(0, 1200, 100):
            optimizer.zero_grad()
            categorical_cross_entropy(model(Tensor(x[start:start + 100])), digits[start:start + 100],
                                      from_logits=True).backward()
            optimizer.step()
    trained = {key: np.array(value, copy=True) for key, value in model.state_dict().items()}
    test_y = digits[1200:]
    figures = {}
    for kind, severity in (("contrast", 0.3), ("gaussian_noise", 0.6)):
        corrupted = Tensor(corrupt_images(x[1200:], kind, severity, seed=1))
        model.load_state_dict(trained)
        model.eval()
        source = float((model(corrupted).data.argmax(-1) == test_y).mean())
        adapt_batchnorm(model, corrupted)
        bn = float((model(corrupted).data.argmax(-1) == test_y).mean())
        model.load_state_dict(trained)
        tent = Tent(model, lr=0.1, steps=10)
        tent_acc = float((tent(corrupted).data.argmax(-1) == test_y).mean())
        figures[kind] = (source, bn, tent_acc)
        assert tent.losses[-1] < tent.losses[0]
    print(figures)
    assert figures["contrast"][1] > figures["contrast"][0] + 0.3
    assert figures["contrast"][2] > figures["contrast"][0] + 0.3
    assert max(figures["gaussian_noise"][1:]) > figures["gaussian_noise"][0] + 0.03


def test_jtt_weights_upweight_the_error_set():
    weights = jtt_weights(np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1]), lambda_up=5.0)
    np.testing.assert_array_equal(weights, [1.0, 5.0, 1.0, 5.0])
    with pytest.raises(ValueError, match="lambda_up must be >= 1"):
        jtt_weights(np.zeros(2), np.zeros(2), 0.5)


def test_marginal_entropy_matches_numpy_and_memo_restores_parameters():
    logits = np.random.default_rng(5).standard_normal((4, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_bar = p.mean(0)
    assert marginal_entropy(Tensor(logits, dtype=np.float64)).item() == pytest.approx(-(p_bar * np.log(p_bar)).sum())
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(3)])
    x = np.random.default_rng(6).standard_normal((1, 5)).astype(np.float32)
    model(Tensor(x))
    before = [q.data.copy() for q in model.parameters()]

    def jitter(v, rng):
        return v + 0.3 * rng.standard_normal(v.shape)

    logits_out, entropies = memo_predict(model, x, jitter, copies=8, steps=10, lr=0.5)
    assert logits_out.shape == (1, 3)
    assert entropies[-1] < entropies[0]
    assert all(np.array_equal(q.data, b) for q, b in zip(model.parameters(), before))
    with pytest.raises(ValueError, match="one test point"):
        memo_predict(model, np.zeros((2, 5), dtype=np.float32), jitter)


def test_readme_section_runs():
    printed, names = run_readme_section("Distribution shift")
    assert "after BatchNorm adaptation" in printed
    assert names["after"] > names["before"] + 0.2
