"""TARNet / CFRNet / DragonNet losses against float64 torch rewrites (values and gradients)."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina.models.causal import CFRNet, DragonNet, TARNet, representation_ipm, treatment_weights


def _data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    t = np.array([0, 1] * (n // 2))
    y = rng.standard_normal(n)
    return x, t, y


def _built(model, x):
    model(x[:2].astype(np.float32))
    model.to(np.float64)
    return model


def _torch_params(model):
    return {name: torch.tensor(p.data, dtype=torch.float64, requires_grad=True) for name, p in model.named_parameters()}


def _torch_stack(params, prefix, x, count, last):
    for i in range(count):
        suffix = "" if i == 0 else f"_{i}"
        x = x @ params[f"{prefix}.dense{suffix}.weight"] + params[f"{prefix}.dense{suffix}.bias"]
        if not (last and i == count - 1):
            x = torch.nn.functional.elu(x)
    return x


def _torch_mmd(a, b, kernel_mul=2.0, kernel_num=5):
    joint = torch.cat([a, b])
    dist = ((joint[:, None] - joint[None]) ** 2).sum(-1)
    total = joint.shape[0]
    base = dist.detach().sum() / (total * total - total)
    kernel = sum(torch.exp(-dist / (base * kernel_mul ** (u - kernel_num // 2))) for u in range(kernel_num))
    n = a.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def _compare_grads(model, params, torch_loss, lamina_loss):
    torch_loss.backward()
    lamina_loss.backward()
    np.testing.assert_allclose(lamina_loss.item(), torch_loss.item(), rtol=1e-10)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("alpha,reweight", [(0.0, False), (0.7, False), (0.7, True)])
def test_tarnet_cfr_loss_matches_torch(alpha, reweight):
    x, t, y = _data()
    model = _built(CFRNet((5, 4), (3,), alpha=alpha, reweight=reweight), x)
    params = _torch_params(model)
    xt = torch.tensor(x)
    r = _torch_stack(params, "phi", xt, 2, last=False)
    out0 = _torch_stack(params, "head0", r, 2, last=True)[:, 0]
    out1 = _torch_stack(params, "head1", r, 2, last=True)[:, 0]
    tt = torch.tensor(t, dtype=torch.float64)
    squared = (tt * out1 + (1 - tt) * out0 - torch.tensor(y)) ** 2
    if reweight:
        u = tt.mean()
        squared = squared * (tt / (2 * u) + (1 - tt) / (2 * (1 - u)))
    expected = squared.mean() + alpha * _torch_mmd(r[t == 1], r[t == 0])
    _compare_grads(model, params, expected, model.loss(lamina.tensor(x, dtype=np.float64), t, y))


def test_dragonnet_loss_matches_torch_with_targeted_regularisation():
    x, t, y = _data(seed=1)
    model = _built(DragonNet((5,), (4,), alpha=0.8, beta=1.3), x)
    model.epsilon.data[...] = 0.35
    params = _torch_params(model)
    z = _torch_stack(params, "z", torch.tensor(x), 1, last=False)
    q0 = _torch_stack(params, "head0", z, 2, last=True)[:, 0]
    q1 = _torch_stack(params, "head1", z, 2, last=True)[:, 0]
    g = (torch.sigmoid(z @ params["propensity_head.weight"] + params["propensity_head.bias"])[:, 0] + 0.01) / 1.02
    tt, yt = torch.tensor(t, dtype=torch.float64), torch.tensor(y)
    q = tt * q1 + (1 - tt) * q0
    bce = torch.nn.functional.binary_cross_entropy(g, tt)
    perturbed = q + params["epsilon"] * (tt / g - (1 - tt) / (1 - g))
    expected = ((q - yt) ** 2).mean() + 0.8 * bce + 1.3 * ((yt - perturbed) ** 2).mean()
    _compare_grads(model, params, expected, model.loss(lamina.tensor(x, dtype=np.float64), t, y))
    assert abs(model.epsilon.grad[0]) > 1e-6  # the targeted term reaches epsilon


@pytest.mark.parametrize("kind", ["mmd", "wasserstein"])
def test_ipm_is_zero_for_identical_sets_and_positive_for_shifted(kind):
    r = np.random.default_rng(0).standard_normal((8, 3))
    same = representation_ipm(lamina.tensor(r, dtype=np.float64), lamina.tensor(r.copy(), dtype=np.float64), kind)
    assert abs(same.item()) < 1e-9
    shifted = representation_ipm(lamina.tensor(r, dtype=np.float64), lamina.tensor(r + 1.0, dtype=np.float64), kind)
    assert shifted.item() > 1e-2


def test_treatment_weights_and_errors():
    w = treatment_weights([1, 0, 0, 0])
    np.testing.assert_allclose(w, [2.0, 2 / 3, 2 / 3, 2 / 3])
    x, t, y = _data()
    model = TARNet((4,), (3,))
    with pytest.raises(ValueError, match="binary"):
        model.loss(x.astype(np.float32), t * 2, y)
    with pytest.raises(ValueError, match="lengths differ"):
        model.loss(x.astype(np.float32), t[:-1], y)
    with pytest.raises(ValueError, match="no treated"):
        model.loss(x.astype(np.float32), np.zeros_like(t), y)
    with pytest.raises(ValueError, match="ipm"):
        CFRNet(ipm="energy")


def test_wasserstein_ipm_gradients():
    a, b = randn(5, 2, seed=1), randn(4, 2, seed=2) + 0.5
    assert check_gradients(lambda u, v: representation_ipm(u, v, "wasserstein", reg=0.5), a, b)
