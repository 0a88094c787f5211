"""Diffusion models: schedules and closed forms against the formulas written in torch, the
timestep embedding and the two denoisers (gradients, torch references, errors), the DDPM and
DDIM samplers with an exact ("oracle") denoiser of Gaussian data, classifier-free guidance,
learning a 2-D mixture, a small U-Net on the 8x8 digits, seeding, and saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_diffusion as ref

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.models import (
    DenoisingMLP,
    DenoisingUNet,
    DiffusionModel,
    NoiseSchedule,
    make_schedule,
    timestep_embedding,
)
from lamina.nn import Module, functional_call
from lamina.nn.transformer import sinusoidal_encoding
from lamina.optim import Adam

T = 50


# -- schedules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, reference", [("linear", ref.linear_betas), ("cosine", ref.cosine_betas),
                                             ("sigmoid", ref.sigmoid_betas)])
@pytest.mark.parametrize("steps", [T, 1000])
def test_schedule_values_match_torch(kind, reference, steps):
    schedule = make_schedule(kind, steps)
    betas = reference(steps)
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    assert schedule.num_timesteps == steps
    assert_close(schedule.betas, betas.numpy(), 1e-12, "betas")
    assert_close(schedule.alphas, alphas.numpy(), 1e-12, "alphas")
    assert_close(schedule.alpha_bars, alpha_bars.numpy(), 1e-12, "alpha_bars")
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    assert_close(schedule.posterior_variance, (betas * (1 - previous) / (1 - alpha_bars)).numpy(), 1e-12)


def test_published_schedule_landmarks():
    linear = NoiseSchedule.linear(1000)
    assert linear.betas[0] == pytest.approx(1e-4) and linear.betas[-1] == pytest.approx(0.02)
    assert linear.alpha_bars[-1] < 1e-4                       # x_T is almost pure noise
    cosine = NoiseSchedule.cosine(1000)
    assert cosine.betas.max() == pytest.approx(0.999)         # the clipping at the end
    assert np.all(np.diff(cosine.alpha_bars) < 0)
    # the default linear betas scale with 1000 / T: the same noise at the end for any T
    assert NoiseSchedule.linear(100).betas[-1] == pytest.approx(0.2)


def test_schedule_errors():
    with pytest.raises(ValueError, match="num_timesteps must be a positive int"):
        NoiseSchedule.cosine(0)
    with pytest.raises(ValueError, match=r"beta_t must lie in \(0, 1\).*1.5"):
        NoiseSchedule([0.1, 1.5])
    with pytest.raises(ValueError, match=r"beta_t must lie in \(0, 1\)"):
        NoiseSchedule([0.0, 0.1])
    with pytest.raises(ValueError, match="T >= 1"):
        NoiseSchedule([])
    with pytest.raises(ValueError, match="num_timesteps > 20"):
        NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match=r"max_beta must lie in \(0, 1\)"):
        NoiseSchedule.cosine(10, max_beta=1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_schedule("quadratic", 10)
    schedule = NoiseSchedule.cosine(10)
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"NoiseSchedule.q_sample: timesteps must lie in \[0, 10\)"):
        schedule.q_sample(x, np.array([0, 1, 10]), x)
    with pytest.raises(ShapeError, match=r"NoiseSchedule.q_sample: timesteps t of shape \(2,\).*batch of 3"):
        schedule.q_sample(x, np.array([0, 1]), x)
    with pytest.raises(TypeError, match="must be integers"):
        schedule.q_sample(x, np.array([0.5, 1, 2]), x)
    with pytest.raises(ShapeError, match="NoiseSchedule.q_sample: the two inputs must have one shape"):
        schedule.q_sample(x, 1, x[:, :1])


def test_config_round_trip_and_respacing():
    for schedule in (NoiseSchedule.linear(30), NoiseSchedule.cosine(12, s=0.01), NoiseSchedule.sigmoid(9),
                     NoiseSchedule([0.1, 0.2, 0.3])):
        again = NoiseSchedule.from_config(schedule.get_config())
        np.testing.assert_array_equal(again.betas, schedule.betas)
    schedule = NoiseSchedule.cosine(20)
    steps = np.array([0, 4, 9, 19])
    respaced = schedule.respaced(steps)
    np.testing.assert_allclose(respaced.alpha_bars, schedule.alpha_bars[steps], rtol=1e-10)
    np.testing.assert_allclose(schedule.respaced(np.arange(20)).betas, schedule.betas, rtol=1e-10)
    with pytest.raises(ValueError, match="increasing ints"):
        schedule.respaced([3, 2])


# -- closed forms against torch ---------------------------------------------------------------
SCHEDULE = NoiseSchedule.cosine(T)
ABAR = torch.cumprod(1 - ref.cosine_betas(T), 0)
ABAR_PREV = torch.cat([torch.ones(1, dtype=torch.float64), ABAR[:-1]])
BETAS = ref.cosine_betas(T)
STEPS = np.array([0, 7, 23, 49])
PREVIOUS = np.array([-1, 3, 10, 40])


def _c(values, x):
    return ref.column(values, STEPS, x.ndim, x.dtype)


def _torch_posterior(x0, xt):
    mean = (_c(ABAR_PREV.sqrt() * BETAS / (1 - ABAR), x0) * x0
            + _c((1 - BETAS).sqrt() * (1 - ABAR_PREV) / (1 - ABAR), x0) * xt)
    return [mean, _c(BETAS * (1 - ABAR_PREV) / (1 - ABAR), x0).expand_as(x0)]


def _torch_ddim(x0, eps, z, eta=0.7):
    abar = ABAR[torch.as_tensor(STEPS)]
    prev = torch.where(torch.as_tensor(PREVIOUS) >= 0, ABAR[torch.as_tensor(np.maximum(PREVIOUS, 0))],
                       torch.ones(len(STEPS), dtype=torch.float64))
    sigma = eta * torch.sqrt((1 - prev) / (1 - abar) * (1 - abar / prev))
    shape = (-1, 1, 1, 1)
    return (prev.sqrt().reshape(shape).to(x0.dtype) * x0
            + torch.sqrt(1 - prev - sigma ** 2).reshape(shape).to(x0.dtype) * eps
            + sigma.reshape(shape).to(x0.dtype) * z)


CLOSED_FORMS = {
    "q_sample": (lambda a, b: SCHEDULE.q_sample(a, STEPS, b),
                 lambda a, b: _c(ABAR.sqrt(), a) * a + _c((1 - ABAR).sqrt(), a) * b),
    "predict_x0": (lambda a, b: SCHEDULE.predict_x0(a, STEPS, b),
                   lambda a, b: (a - _c((1 - ABAR).sqrt(), a) * b) / _c(ABAR.sqrt(), a)),
    "predict_eps": (lambda a, b: SCHEDULE.predict_eps(a, STEPS, b),
                    lambda a, b: (a - _c(ABAR.sqrt(), a) * b) / _c((1 - ABAR).sqrt(), a)),
    "velocity": (lambda a, b: SCHEDULE.velocity(a, STEPS, b),
                 lambda a, b: _c(ABAR.sqrt(), a) * b - _c((1 - ABAR).sqrt(), a) * a),
    "x0_from_velocity": (lambda a, b: SCHEDULE.x0_from_velocity(a, STEPS, b),
                         lambda a, b: _c(ABAR.sqrt(), a) * a - _c((1 - ABAR).sqrt(), a) * b),
    "eps_from_velocity": (lambda a, b: SCHEDULE.eps_from_velocity(a, STEPS, b),
                          lambda a, b: _c((1 - ABAR).sqrt(), a) * a + _c(ABAR.sqrt(), a) * b),
    "posterior_mean_variance": (lambda a, b: _broadcast(SCHEDULE.posterior_mean_variance(a, b, STEPS), a),
                                _torch_posterior),
}


def _broadcast(pair, like):
    """(mean, variance) with the (N, 1, ..., 1) variance spread to the samples' shape."""
    mean, variance = pair
    return [mean, variance + like * 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_closed_forms_match_torch(name, dtype):
    ours, theirs = CLOSED_FORMS[name]
    compare_with_torch(ours, theirs, randn(4, 3, 2, 2, seed=1), randn(4, 3, 2, 2, seed=2), dtype=dtype,
                       rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("name", ["q_sample", "velocity", "predict_x0"])
def test_closed_forms_gradcheck(name):
    ours, _ = CLOSED_FORMS[name]
    assert check_gradients(ours, randn(4, 3, seed=1), randn(4, 3, seed=2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ddim_step_matches_torch(dtype):
    compare_with_torch(lambda x0, eps, z: SCHEDULE.ddim_step(x0, eps, STEPS, PREVIOUS, eta=0.7, noise=z),
                       _torch_ddim, randn(4, 2, 2, 1, seed=3), randn(4, 2, 2, 1, seed=4),
                       randn(4, 2, 2, 1, seed=5), dtype=dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert check_gradients(lambda x0, eps, z: SCHEDULE.ddim_step(x0, eps, STEPS, PREVIOUS, eta=0.7, noise=z),
                           randn(4, 2, seed=3), randn(4, 2, seed=4), randn(4, 2, seed=5))


def test_ddim_step_eta_one_is_the_ddpm_posterior():
    """eta = 1 from t to t - 1 draws from the posterior q(x_{t-1} | x_t, x_0): its mean and spread."""
    lamina.set_default_dtype(np.float64)
    x0, eps, z = randn(4, 3, seed=1), randn(4, 3, seed=2), randn(4, 3, seed=3)
    steps = np.array([1, 5, 20, 49])
    x_t = SCHEDULE.q_sample(x0, steps, eps)
    stepped = SCHEDULE.ddim_step(x0, eps, steps, steps - 1, eta=1.0, noise=z).numpy()
    mean, variance = SCHEDULE.posterior_mean_variance(x0, x_t, steps)
    np.testing.assert_allclose(stepped, mean.numpy() + np.sqrt(variance.numpy()) * z, rtol=1e-9, atol=1e-12)


# -- timestep embedding and denoisers ----------------------------------------------------------
def test_timestep_embedding():
    table = sinusoidal_encoding(40, 10)
    np.testing.assert_allclose(timestep_embedding(np.array([0, 3, 39]), 10, np.float64), table[[0, 3, 39]],
                               rtol=1e-12)
    t = np.array([0.5, 7.25, 999.0])
    np.testing.assert_allclose(timestep_embedding(t, 16, np.float64), ref.timestep_embedding(t, 16, torch.float64),
                               rtol=1e-12)
    with pytest.raises(ShapeError, match="timestep_embedding: t must be a 1-D array"):
        timestep_embedding(np.zeros((2, 2)), 4)


def _randomized(model, seed=0, scale=0.4):
    """``model`` in float64 with every weight drawn at random (the heads start at zero)."""
    model.double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return model


def _weights(model):
    names = [name for name, _ in model.named_parameters()]
    return names, [p.numpy().copy() for _, p in model.named_parameters()]


def test_denoising_mlp_against_torch_and_gradcheck():
    lamina.set_default_dtype(np.float64)
    model = DenoisingMLP(hidden=(6, 5), time_dim=4, num_classes=3)
    x, t, y = randn(4, 3, seed=1), np.array([0, 3, 17, 49]), np.array([0, 2, 3, 1])
    model(x, t, y)
    _randomized(model)
    names, weights = _weights(model)

    def ours(x, *params):
        return functional_call(model, dict(zip(names, params)), x, t, y)

    def theirs(x, *params):
        return ref.denoising_mlp(dict(zip(names, params)), x, t, 2, 4, y)

    compare_with_torch(ours, theirs, x, *weights, dtype=np.float64)
    assert check_gradients(lambda x, *p: ours(x, *p), x, *weights)


def test_denoising_unet_against_torch_and_gradcheck():
    lamina.set_default_dtype(np.float64)
    model = DenoisingUNet(base_filters=4, multipliers=(1, 2), groups=2, time_dim=6)
    x, t = randn(2, 4, 4, 2, seed=1), np.array([3, 40])
    model(x, t)
    _randomized(model, scale=0.3)
    names, weights = _weights(model)

    def ours(x, *params):
        return functional_call(model, dict(zip(names, params)), x, t)

    def theirs(x, *params):
        return ref.denoising_unet(dict(zip(names, params)), x, t, 2, 2, 6)

    compare_with_torch(ours, theirs, x, *weights, dtype=np.float64)
    assert check_gradients(lambda x: model(x, t), x)


def test_denoiser_shapes_and_lazy_build():
    mlp = DenoisingMLP(hidden=(8,))
    assert not mlp.built
    assert mlp(np.zeros((5, 3), np.float32), np.arange(5)).shape == (5, 3)
    assert mlp(np.zeros((2, 3), np.float32), 7).shape == (2, 3)        # one timestep for the batch
    unet = DenoisingUNet(base_filters=4, multipliers=(1, 2, 2), groups=4)
    out = unet(np.zeros((2, 8, 4, 3), np.float32), np.array([1, 2]))
    assert out.shape == (2, 8, 4, 3)
    assert np.all(out.numpy() == 0)                                    # the head starts at zero


def test_denoiser_errors():
    mlp = DenoisingMLP(hidden=(4,))
    mlp(np.zeros((2, 3), np.float32), np.arange(2))
    with pytest.raises(ShapeError, match=r"DenoisingMLP.*shape \(2, 4\).*expected \(batch, 3\)"):
        mlp(np.zeros((2, 4), np.float32), np.arange(2))
    with pytest.raises(ShapeError, match=r"DenoisingMLP.*timesteps t of shape \(3,\) do not fit a batch of 2"):
        mlp(np.zeros((2, 3), np.float32), np.arange(3))
    with pytest.raises(ValueError, match="DenoisingMLP.*no num_classes"):
        mlp(np.zeros((2, 3), np.float32), np.arange(2), np.arange(2))
    with pytest.raises(ShapeError, match=r"DenoisingMLP.*expected \(batch, features\)"):
        DenoisingMLP(hidden=(4,))(np.zeros((2, 3, 3), np.float32), np.arange(2))
    conditional = DenoisingMLP(hidden=(4,), num_classes=2)
    with pytest.raises(ValueError, match=r"class labels must be integers in \[0, 2\]"):
        conditional(np.zeros((2, 3), np.float32), np.arange(2), np.array([0, 5]))
    unet = DenoisingUNet(base_filters=4, multipliers=(1, 2, 2), groups=2)
    with pytest.raises(ShapeError, match=r"DenoisingUNet.*shape \(1, 6, 8, 1\).*divisible by 2\^\(levels - 1\) = 4"):
        unet(np.zeros((1, 6, 8, 1), np.float32), np.arange(1))
    unet = DenoisingUNet(base_filters=4, groups=2)
    unet(np.zeros((1, 4, 4, 1), np.float32), np.arange(1))
    with pytest.raises(ShapeError, match=r"DenoisingUNet.*shape \(1, 4, 4, 2\).*expected a 4-D NHWC batch"):
        unet(np.zeros((1, 4, 4, 2), np.float32), np.arange(1))
    with pytest.raises(ValueError, match="DenoisingMLP: hidden must name at least one"):
        DenoisingMLP(hidden=())


# -- samplers with an exact denoiser ------------------------------------------------------------
class GaussianOracle(Module):
    """The exact E[eps | x_t] (or x_0, or v) for data N(mu, s^2 I): x_t ~ N(sqrt(abar) mu,
    (abar s^2 + 1 - abar) I) and eps^ = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)."""

    def __init__(self, schedule, mu, s, prediction="eps"):
        super().__init__()
        self.schedule, self.mu, self.s, self.prediction = schedule, np.asarray(mu), s, prediction

    def forward(self, x_t, t):
        x = x_t.numpy()
        abar = self.schedule.alpha_bars[np.asarray(t)].reshape(-1, *([1] * (x.ndim - 1)))
        eps = np.sqrt(1 - abar) * (x - np.sqrt(abar) * self.mu) / (abar * self.s ** 2 + 1 - abar)
        x0 = (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        out = {"eps": eps, "x0": x0, "v": np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0}[self.prediction]
        return lamina.tensor(out.astype(x.dtype))


MU = np.array([1.5, -0.5])


def oracle_model(s=0.5, prediction="eps", steps=200, kind="cosine"):
    schedule = make_schedule(kind, steps)
    return DiffusionModel(GaussianOracle(schedule, MU, s, prediction), schedule=schedule, prediction=prediction,
                          sample_shape=(2,))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("method, steps, eta, spread", [("ddpm", None, 0.0, 0.05), ("ddim", 40, 0.0, 0.05),
                                                        ("ddpm", 40, 0.0, 0.1), ("ddim", 40, 1.0, 0.1)])
def test_oracle_sampling_recovers_the_gaussian(prediction, method, steps, eta, spread):
    """The samples' mean and spread are the data's; the stochastic samplers on few steps come
    out a little narrower (their posterior variance beta~ is the smaller of Ho et al.'s two)."""
    model = oracle_model(prediction=prediction)
    samples = model.sample(4000, steps=steps, method=method, eta=eta)
    assert samples.shape == (4000, 2) and samples.dtype == np.float32
    np.testing.assert_allclose(samples.mean(axis=0), MU, atol=0.04)
    np.testing.assert_allclose(samples.std(axis=0), [0.5, 0.5], rtol=spread)


def test_oracle_of_a_point_mass_gives_the_point():
    """Data all at mu (s = 0): every x_0^ is mu, and deterministic DDIM ends exactly there."""
    model = oracle_model(s=0.0, kind="linear")
    samples = model.sample(50, steps=10, method="ddim")
    np.testing.assert_allclose(samples, np.tile(MU, (50, 1)), atol=1e-5)


def test_untrained_denoiser_gives_noise_not_data():
    """A zero eps-predictor (the untrained nets' output) keeps x_0^ = x_t / sqrt(abar): the
    sampler's results then differ plainly from the oracle's."""
    model = DiffusionModel(DenoisingMLP(hidden=(4,)), schedule="cosine", num_timesteps=T, sample_shape=(2,))
    samples = model.sample(500, steps=10, method="ddim")
    assert np.abs(samples.mean(axis=0) - MU).max() > 0.4


def test_ddim_with_eta_zero_is_deterministic():
    model = oracle_model()
    start = np.random.default_rng(3).standard_normal((20, 2))
    lamina.manual_seed(1)
    first = model.sample(20, steps=15, method="ddim", start=start)
    lamina.manual_seed(2)
    again = model.sample(20, steps=15, method="ddim", start=start)
    np.testing.assert_array_equal(first, again)
    lamina.manual_seed(2)
    noisy = model.sample(20, steps=15, method="ddim", eta=1.0, start=start)
    assert np.abs(noisy - first).max() > 1e-2
    lamina.manual_seed(5)
    a = model.sample(20, steps=15, method="ddpm")
    lamina.manual_seed(5)
    np.testing.assert_array_equal(a, model.sample(20, steps=15, method="ddpm"))


def test_clip_x0():
    model = oracle_model(s=0.0)
    samples = model.sample(30, steps=5, method="ddim", clip_x0=(-0.2, 0.2))
    assert samples.min() >= -0.2 - 1e-6 and samples.max() <= 0.2 + 1e-6


def test_sampling_timesteps():
    model = oracle_model(steps=100)
    np.testing.assert_array_equal(model.sampling_timesteps(), np.arange(100))
    chosen = model.sampling_timesteps(5)
    assert chosen[0] == 0 and chosen[-1] == 99 and len(chosen) == 5 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(model.sampling_timesteps(1), [99])


def test_sampling_errors():
    model = oracle_model()
    with pytest.raises(ValueError, match="method must be one of"):
        model.sample(2, method="euler")
    with pytest.raises(ValueError, match="eta sets the noise of DDIM steps"):
        model.sample(2, method="ddpm", eta=0.5)
    with pytest.raises(ValueError, match="steps=500 exceeds the model's 200 timesteps"):
        model.sample(2, steps=500)
    with pytest.raises(ValueError, match="no num_classes"):
        model.sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="clip_x0 must be a positive number"):
        model.sample(2, clip_x0=-1)
    with pytest.raises(ShapeError, match=r"start of shape \(3, 2\).*must have shape \(2, 2\)"):
        model.sample(2, start=np.zeros((3, 2)))
    unknown = DiffusionModel(DenoisingMLP(hidden=(4,)), num_timesteps=T)
    with pytest.raises(RuntimeError, match="sample shape is unknown"):
        unknown.sample(2)
    with pytest.raises(ValueError, match="prediction must be one of"):
        DiffusionModel(DenoisingMLP(), prediction="score")
    with pytest.raises(TypeError, match="net must be a Module"):
        DiffusionModel(lambda x, t: x)
    model = DiffusionModel(DenoisingMLP(hidden=(4,)), num_timesteps=T, sample_shape=(2,))
    with pytest.raises(ShapeError, match=r"DiffusionModel.loss: got data of shape \(4, 3\).*expected \(batch, 2\)"):
        model.loss(np.zeros((4, 3), np.float32))


# -- loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_is_the_mse_of_the_chosen_target(prediction):
    lamina.set_default_dtype(np.float64)
    net = DenoisingMLP(hidden=(5,), time_dim=4)
    model = DiffusionModel(net, schedule="cosine", num_timesteps=T, prediction=prediction)
    x0, noise, t = randn(6, 3, seed=1), randn(6, 3, seed=2), np.array([0, 5, 9, 20, 33, 49])
    model.loss(x0, t=t, noise=noise)
    _randomized(net)
    x_t = SCHEDULE.q_sample(x0, t, noise)
    target = {"eps": noise, "x0": x0, "v": SCHEDULE.velocity(x0, t, noise).numpy()}[prediction]
    expected = np.mean((net(x_t, t).numpy() - target) ** 2)
    assert model.loss(x0, t=t, noise=noise).item() == pytest.approx(expected, rel=1e-12)
    assert check_gradients(lambda x: model.loss(x, t=t, noise=noise), x0)


def test_loss_draws_from_the_global_generator():
    model = DiffusionModel(DenoisingMLP(hidden=(4,)), num_timesteps=T)
    x = randn(8, 2).astype(np.float32)
    lamina.manual_seed(4)
    first = model.loss(x).item()
    second = model.loss(x).item()
    lamina.manual_seed(4)
    assert model.loss(x).item() == first and first != second


# -- classifier-free guidance ----------------------------------------------------------------------
class LabelEcho(Module):
    """An eps-predictor whose output is the label (+ 1, "no class" included), recording the labels it saw."""

    num_classes, null_class = 3, 3

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x_t, t, y=None):
        labels = np.full(x_t.shape[0], 3) if y is None else np.asarray(y)
        self.seen.append(labels)
        return lamina.tensor(np.broadcast_to((labels + 1.0)[:, None], x_t.shape).astype(np.float32))


def test_guidance_combines_conditional_and_unconditional_outputs():
    model = DiffusionModel(LabelEcho(), schedule="cosine", num_timesteps=T, sample_shape=(2,))
    x = np.zeros((2, 2), np.float32)
    _, eps = model.predict_x0_eps(x, 10, labels=np.array([0, 2]), guidance_scale=3.0)
    # unconditional 4, conditional 1 and 3: 4 + 3 (c - 4)
    np.testing.assert_allclose(eps.numpy(), [[-5.0, -5.0], [1.0, 1.0]])
    _, eps = model.predict_x0_eps(x, 10, labels=np.array([0, 2]))
    np.testing.assert_allclose(eps.numpy(), [[1.0, 1.0], [3.0, 3.0]])
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs labels"):
        model.sample(2, guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"labels must be 2 integers in \[0, 3\)"):
        model.sample(2, labels=[0, 3])


def test_label_dropout_in_the_loss():
    echo = LabelEcho()
    model = DiffusionModel(echo, schedule="cosine", num_timesteps=T, label_dropout=0.5)
    labels = np.zeros(2000, dtype=np.int64)
    model.loss(np.zeros((2000, 2), np.float32), labels=labels)
    dropped = np.mean(echo.seen[-1] == 3)
    assert 0.45 < dropped < 0.55 and set(np.unique(echo.seen[-1])) == {0, 3}
    model.label_dropout = 0.0
    model.loss(np.zeros((10, 2), np.float32), labels=labels[:10])
    assert np.all(echo.seen[-1] == 0)


# -- learning ------------------------------------------------------------------------------------------
CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    return (CENTERS[rng.integers(0, 3, n)] + 0.25 * rng.standard_normal((n, 2))).astype(np.float32)


def mode_report(samples):
    """(fraction of samples within 0.75 of a centre, fraction at each centre among those)."""
    distances = np.linalg.norm(samples[:, None, :] - CENTERS[None], axis=2)
    near = distances.min(axis=1) < 0.75
    fractions = np.bincount(distances.argmin(axis=1)[near], minlength=3) / max(near.sum(), 1)
    return near.mean(), fractions


def test_mlp_learns_a_gaussian_mixture():
    """Samples land on the three modes in the data's proportions (ancestral sampling), and DDIM
    on 25 steps covers every mode; the untrained model's samples land on none."""
    x = mixture(2000)
    model = DiffusionModel(DenoisingMLP(hidden=(48, 48), time_dim=16), schedule="cosine", num_timesteps=T)
    model(x[:1], np.zeros(1, dtype=np.int64))
    before = mode_report(model.sample(600, method="ddpm"))[0]
    optimizer = Adam(model, lr=5e-3)
    rng = np.random.default_rng(1)
    for step in range(900):
        if step == 600:
            optimizer.lr = 1e-3
        loss = model.loss(x[rng.integers(0, len(x), 128)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    near, fractions = mode_report(model.sample(600, method="ddpm"))
    assert before < 0.1 and near > 0.9, (before, near)
    np.testing.assert_allclose(fractions, [1 / 3] * 3, atol=0.1)
    # the deterministic sampler, x_0^ clipped: at t = T-1 alpha_bar is 1e-6 and x_0^ = x_t / 1e-3 - ...
    near, fractions = mode_report(model.sample(600, steps=25, method="ddim", clip_x0=4.0))
    assert near > 0.8 and fractions.min() > 0.15, (near, fractions)


@pytest.fixture(scope="module")
def digits():
    x, _ = lamina.data.load_digits(size=8)
    return (x.astype(np.float32) / 255 * 2 - 1)[:256]


def test_unet_smoke_training_on_digits(digits):
    def run():
        lamina.manual_seed(0)
        model = DiffusionModel(DenoisingUNet(base_filters=8, multipliers=(1, 2), groups=4), num_timesteps=T,
                               schedule="cosine")
        model(digits[:1], np.zeros(1, dtype=np.int64))
        optimizer = Adam(model, lr=5e-3)
        losses = []
        for step in range(20):
            loss = model.loss(digits[(step % 8) * 32:(step % 8 + 1) * 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return model, losses

    model, losses = run()
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:2])
    samples = model.sample(3, steps=4, method="ddim", clip_x0=1.0)
    assert samples.shape == (3, 8, 8, 1) and np.isfinite(samples).all()
    again, losses_again = run()
    assert losses_again == losses
    lamina.manual_seed(7)
    first = model.sample(3, steps=4, method="ddpm")
    lamina.manual_seed(7)
    np.testing.assert_array_equal(first, again.sample(3, steps=4, method="ddpm"))


# -- saving ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda: DenoisingMLP(hidden=(6,), time_dim=4, num_classes=2), (3,)),
    (lambda: DenoisingUNet(base_filters=4, multipliers=(1, 2), groups=2), (4, 4, 1)),
])
def test_config_and_save_load_round_trip(tmp_path, make, shape):
    model = DiffusionModel(make(), schedule="sigmoid", num_timesteps=20, prediction="v", label_dropout=0.2)
    x = randn(4, *shape).astype(np.float32)
    labels = np.array([0, 1, 1, 0]) if model.num_classes else None
    model.loss(x, labels=labels)
    for p in model.parameters():
        p.data = p.data + 0.1
    rebuilt = lamina.nn.layer_from_config(lamina.nn.layer_to_config(model))
    assert rebuilt.get_config() == model.get_config()
    lamina.save(model, tmp_path / "diffusion.safetensors")
    loaded = lamina.load(tmp_path / "diffusion.safetensors")
    assert type(loaded) is DiffusionModel and loaded.get_config() == model.get_config()
    assert loaded.sample_shape == shape and loaded.schedule.kind == "sigmoid"
    lamina.manual_seed(3)
    ours = model.sample(2, steps=5, labels=labels[:2] if labels is not None else None)
    lamina.manual_seed(3)
    theirs = loaded.sample(2, steps=5, labels=labels[:2] if labels is not None else None)
    np.testing.assert_array_equal(ours, theirs)
