"""CNP, NP and ANP: loss, predictions and parameter gradients against torch re-implementations
written from the papers and the reference notebooks (float64, the same weights), the KL term
against the closed form, invariance to the order of the context, GP curves and the errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import set_references as ref
from helpers import assert_close, check_gradients
from lamina import models
from lamina.errors import ShapeError

HEADS = 2


def _task(seed=0, batch=3):
    return models.GPCurves(batch_size=batch, max_num_context=7, dtype=np.float64, seed=seed).sample()


def _cnp():
    return models.ConditionalNeuralProcess(1, encoder_sizes=(8, 8), decoder_sizes=(8,))


def _np(deterministic=False):
    return models.NeuralProcess(1, encoder_sizes=(8, 8), latent_dim=4, decoder_sizes=(8,),
                                deterministic_path=deterministic)


def _anp():
    return models.AttentiveNeuralProcess(1, encoder_sizes=(8, 8), latent_dim=4, decoder_sizes=(8,), num_heads=HEADS,
                                         self_attention_layers=1, attention_sizes=(8, 8))


# -- the torch reference ------------------------------------------------------------------
def _mlp(p, prefix, x):
    count = len({k for k in p if k.startswith(f"{prefix}.dense") and k.endswith(".weight")})
    for i in range(count):
        x = ref.linear(p, f"{prefix}.dense" + (f"_{i}" if i else ""), x)
        x = torch.relu(x) if i < count - 1 else x
    return x


def _tile(rows, count):
    return rows[:, None, :].expand(-1, count, -1)


def _decode(p, representation, target_x):
    out = _mlp(p, "decoder", torch.cat([representation, target_x], -1))
    return out[..., :1], 0.1 + 0.9 * TF.softplus(out[..., 1:])


def _log_likelihood(mean, std, y):
    return torch.distributions.Normal(mean, std).log_prob(y).sum(-1)


def _torch_cnp(p, cx, cy, tx):
    r = _mlp(p, "encoder", torch.cat([cx, cy], -1)).mean(1)
    return _decode(p, _tile(r, tx.shape[1]), tx)


def _torch_latent(p, x, y, attentive):
    h = _mlp(p, "latent_encoder", torch.cat([x, y], -1))
    if attentive:
        h = ref.sab(p, "latent_self_attention.0.", h, HEADS, True)
    h = torch.relu(ref.linear(p, "latent_hidden", h.mean(1)))
    scale = 0.1 + 0.9 * torch.sigmoid(ref.linear(p, "latent_scale", h))
    return torch.distributions.Normal(ref.linear(p, "latent_mean", h), scale)


def _torch_cross_attention(p, tx, cx, values):
    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)

    q = heads(_mlp(p, "cross_attention.key_mlp", tx) @ p["cross_attention.query.weight"])
    k = heads(_mlp(p, "cross_attention.key_mlp", cx) @ p["cross_attention.key.weight"])
    v = heads(values @ p["cross_attention.value.weight"])
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    out = (weights @ v).transpose(1, 2).reshape(tx.shape[0], tx.shape[1], -1)
    return out @ p["cross_attention.output.weight"]


def _torch_predictive(p, cx, cy, tx, z, kind):
    parts = [_tile(z, tx.shape[1])]
    if kind == "np_deterministic":
        parts.insert(0, _tile(_mlp(p, "deterministic_encoder", torch.cat([cx, cy], -1)).mean(1), tx.shape[1]))
    elif kind == "anp":
        h = ref.sab(p, "deterministic_self_attention.0.", _mlp(p, "deterministic_encoder", torch.cat([cx, cy], -1)),
                    HEADS, True)
        parts.insert(0, _torch_cross_attention(p, tx, cx, h))
    return _decode(p, torch.cat(parts, -1), tx)


def _torch_loss(p, cx, cy, tx, ty, noise, kind):
    if kind == "cnp":
        return -_log_likelihood(*_torch_cnp(p, cx, cy, tx), ty).mean(), None, None
    prior = _torch_latent(p, cx, cy, kind == "anp")
    posterior = _torch_latent(p, tx, ty, kind == "anp")
    z = posterior.loc + posterior.scale * noise
    log_likelihood = _log_likelihood(*_torch_predictive(p, cx, cy, tx, z, kind), ty).sum(1)
    kl = torch.distributions.kl_divergence(posterior, prior).sum(-1)
    return -(log_likelihood - kl).mean() / tx.shape[1], log_likelihood, kl


def _torch_predict(p, cx, cy, tx, kind):
    if kind == "cnp":
        return _torch_cnp(p, cx, cy, tx)
    return _torch_predictive(p, cx, cy, tx, _torch_latent(p, cx, cy, kind == "anp").loc, kind)


MODELS = {"cnp": _cnp, "np": _np, "np_deterministic": lambda: _np(True), "anp": _anp}


def _with_random_weights(model, task, seed=3):
    model.loss(*task)
    model.double()
    names, values = ref.named_values(model, seed=seed)
    for (_, parameter), value in zip(model.named_parameters(), values):
        parameter.data = value.copy()
    return {name: torch.tensor(value, requires_grad=True) for name, value in zip(names, values)}


@pytest.mark.parametrize("kind", list(MODELS))
def test_loss_predictions_and_gradients_match_torch(kind):
    task = _task()
    model = MODELS[kind]()
    theirs = _with_random_weights(model, task)
    noise = np.random.default_rng(5).standard_normal((task.context_x.shape[0], 4))
    tensors = [torch.from_numpy(a) for a in task]
    if kind == "cnp":
        ours = model.loss(*task), None, None
    else:
        ours = model.loss(*task, latent_noise=noise, return_parts=True)
    expected = _torch_loss(theirs, *tensors, torch.from_numpy(noise), kind)
    for a, b, what in zip(ours, expected, ("loss", "log-likelihood", "kl")):
        if b is not None:
            assert_close(a.numpy(), b.detach().numpy(), 1e-10, what)
    model.zero_grad()
    ours[0].backward()
    expected[0].backward()
    for name, parameter in model.named_parameters():
        if name.endswith("fc_k.bias"):       # the softmax ignores it: both gradients are rounding noise
            assert np.abs(parameter.grad).max() < 1e-14
            continue
        assert_close(parameter.grad, theirs[name].grad.numpy(), 1e-9, f"gradient of {name}")
    mean, std = model.predict(task.context_x, task.context_y, task.target_x)
    torch_mean, torch_std = _torch_predict(theirs, *tensors[:3], kind)
    assert_close(mean.numpy(), torch_mean.detach().numpy(), 1e-10, "predicted mean")
    assert_close(std.numpy(), torch_std.detach().numpy(), 1e-10, "predicted std")
    assert np.all(std.numpy() > 0.1)


@pytest.mark.parametrize("kind", ["cnp", "anp"])
def test_loss_gradients_with_respect_to_the_sets_pass_gradcheck(kind):
    task = _task(seed=6, batch=2)
    model = MODELS[kind]()
    _with_random_weights(model, task)
    noise = np.random.default_rng(1).standard_normal((2, 4))

    def loss(cx, cy, tx, ty):
        return model.loss(cx, cy, tx, ty) if kind == "cnp" else model.loss(cx, cy, tx, ty, latent_noise=noise)

    assert check_gradients(loss, *task)


@pytest.mark.parametrize("kind", ["np", "anp"])
def test_kl_term_is_the_closed_form_for_diagonal_gaussians(kind):
    task = _task(seed=1)
    model = MODELS[kind]()
    _with_random_weights(model, task)
    _, _, kl = model.loss(*task, return_parts=True)
    prior = model.latent_distribution(task.context_x, task.context_y)
    posterior = model.latent_distribution(task.target_x, task.target_y)
    m1, s1, m2, s2 = (d.numpy() for d in (posterior.loc, posterior.scale, prior.loc, prior.scale))
    closed = np.sum(np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5, axis=-1)
    assert_close(kl.numpy(), closed, 1e-12, "KL(q(z | targets) || q(z | context))")
    assert np.all(kl.numpy() > 0)


@pytest.mark.parametrize("kind", ["cnp", "np", "anp"])
def test_predictions_do_not_depend_on_the_order_of_the_context(kind):
    task = _task(seed=2)
    model = MODELS[kind]()
    _with_random_weights(model, task)
    order = np.random.default_rng(0).permutation(task.num_context)
    mean, std = model.predict(task.context_x, task.context_y, task.target_x)
    mean_p, std_p = model.predict(task.context_x[:, order], task.context_y[:, order], task.target_x)
    assert_close(mean_p.numpy(), mean.numpy(), 1e-12, "mean, context permuted")
    assert_close(std_p.numpy(), std.numpy(), 1e-12, "std, context permuted")
    other = model.predict(task.context_x[:, :-1], task.context_y[:, :-1], task.target_x)[0]
    assert not np.allclose(other.numpy(), mean.numpy())


def test_sampled_predictions_vary_with_the_latent():
    task = _task(seed=4)
    model = _np()
    _with_random_weights(model, task)
    first = model.predict(task.context_x, task.context_y, task.target_x, sample=True)[0].numpy()
    second = model.predict(task.context_x, task.context_y, task.target_x, sample=True)[0].numpy()
    assert not np.allclose(first, second)


def test_gp_curves_split_context_and_targets():
    task = models.GPCurves(batch_size=4, max_num_context=9, seed=0).sample()
    assert task.context_x.dtype == np.float32
    assert 3 <= task.num_context < 9 and task.num_context + 2 <= task.num_targets < task.num_context + 9
    np.testing.assert_array_equal(task.context_x, task.target_x[:, :task.num_context])
    np.testing.assert_array_equal(task.context_y, task.target_y[:, :task.num_context])
    test = models.GPCurves(batch_size=2, testing=True, num_test_points=50, seed=1).sample()
    assert test.target_x.shape == (2, 50, 1)
    for b in range(2):
        rows = [int(np.flatnonzero(test.target_x[b, :, 0] == x)[0]) for x in test.context_x[b, :, 0]]
        np.testing.assert_array_equal(test.target_y[b, rows], test.context_y[b])


def test_gp_curves_have_the_kernel_covariance():
    curves = models.GPCurves(batch_size=300, max_num_context=6, length_scale=0.5, signal_scale=1.5,
                             noise=0.1, dtype=np.float64, seed=0)
    task = curves.sample()
    # whitened by the kernel's covariance 1.5^2 exp(-d^2 / (2 0.5^2)) + 0.1^2 I, the draws are N(0, I)
    whitened = []
    for x, y in zip(task.target_x[:, :, 0], task.target_y[:, :, 0]):
        covariance = 1.5 ** 2 * np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * 0.5 ** 2)) + 0.01 * np.eye(len(x))
        whitened.append(np.linalg.solve(np.linalg.cholesky(covariance), y))
    whitened = np.concatenate(whitened)
    assert len(whitened) > 1500
    assert np.mean(whitened) == pytest.approx(0.0, abs=0.08)
    assert np.var(whitened) == pytest.approx(1.0, abs=0.08)


def test_errors_name_the_model_and_shapes():
    task = _task()
    model = _cnp()
    with pytest.raises(ShapeError, match="ConditionalNeuralProcess: target_x of shape"):
        model(task.context_x, task.context_y, task.target_x[..., [0, 0]])
    with pytest.raises(ShapeError, match="ConditionalNeuralProcess: context_y of shape"):
        model(task.context_x, task.context_y[:, :-1], task.target_x)
    with pytest.raises(ShapeError, match=r"AttentiveNeuralProcess: target_y .* y_dim 1"):
        _anp().loss(*task[:3], np.concatenate([task.target_y] * 2, axis=-1))
    with pytest.raises(ShapeError, match="expected \\(batch, points, features\\)"):
        _np().predict(task.context_x[0], task.context_y[0], task.target_x[0])
    model(*task[:3])
    with pytest.raises(ShapeError, match="built for 1"):
        model(task.context_x[..., [0, 0]], task.context_y, task.target_x[..., [0, 0]])
    with pytest.raises(ValueError, match="AttentiveNeuralProcess: .* not divisible by num_heads"):
        models.AttentiveNeuralProcess(encoder_sizes=(6,), num_heads=4)
