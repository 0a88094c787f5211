"""Prior-fitted networks: the attention mask (queries independent of each other, dependent on
the training points, invariant to the order of the training set), the forward pass against a
float64 torch rewrite with the same weights, a float64 gradient check, predictions, errors,
saving, and learning: on fresh GP tasks the predictive mean close to the exact GP posterior mean
and the NLL below a Gaussian fitted to the context; on the random-MLP prior in-context accuracy
well above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, perturb_parameters, randn, run_readme_section
from lamina import models
from lamina.data import GPPrior, MLPClassPrior, rbf_covariance
from lamina.errors import ShapeError

SEED = 0


def _regression_pfn(**options):
    lamina.manual_seed(0)
    model = models.PFN(2, 6, d_model=8, heads=2, layers=2, **options)
    model(randn(1, 3, 2), randn(1, 3), randn(1, 2, 2))
    perturb_parameters(model, scale=0.1)
    return model


def _outputs(model, x_train, y_train, x_query):
    with lamina.no_grad():
        return model(x_train, y_train, x_query).numpy()


# -- the attention mask --------------------------------------------------------------------
def test_the_mask_lets_every_position_see_the_training_points_only():
    mask = models.pfn_attention_mask(3, 2)
    expected = np.array([[1, 1, 1, 0, 0]] * 5, dtype=bool)
    np.testing.assert_array_equal(mask, expected)


def test_a_query_does_not_see_the_other_queries_and_sees_the_training_points():
    model = _regression_pfn()
    x_train, y_train, x_query = randn(2, 5, 2, seed=1), randn(2, 5, seed=2), randn(2, 4, 2, seed=3)
    out = _outputs(model, x_train, y_train, x_query)
    moved = x_query.copy()
    moved[:, 1:] += randn(2, 3, 2, seed=4)                           # every query but the first
    np.testing.assert_allclose(_outputs(model, x_train, y_train, moved)[:, 0], out[:, 0], rtol=1e-5, atol=1e-6)
    alone = _outputs(model, x_train, y_train, x_query[:, 2:3])        # one query at a time
    np.testing.assert_allclose(alone[:, 0], out[:, 2], rtol=1e-5, atol=1e-6)
    for changed in (x_train.copy(), y_train.copy()):
        changed[:, 3] += 0.5
        inputs = (changed, y_train) if changed.ndim == 3 else (x_train, changed)
        assert np.all(np.abs(_outputs(model, *inputs, x_query) - out).max(axis=-1) > 1e-4)


def test_permuting_the_training_set_leaves_the_outputs_unchanged():
    model = _regression_pfn()
    x_train, y_train, x_query = randn(2, 6, 2, seed=5), randn(2, 6, seed=6), randn(2, 3, 2, seed=7)
    order = np.random.default_rng(0).permutation(6)
    out = _outputs(model, x_train, y_train, x_query)
    np.testing.assert_allclose(_outputs(model, x_train[:, order], y_train[:, order], x_query), out,
                               rtol=1e-5, atol=1e-6)


# -- the forward pass against torch -----------------------------------------------------------
def _torch_pfn(model):
    """torch's post-norm GELU encoder layers and Linear encoders/decoder with the PFN's weights."""
    def linear(dense):
        layer = torch.nn.Linear(*dense.weight.shape, dtype=torch.float64)
        layer.weight.data = torch.tensor(dense.weight.numpy().T)
        layer.bias.data = torch.tensor(dense.bias.numpy())
        return layer

    layers = []
    for ours in model.encoder:
        theirs = torch.nn.TransformerEncoderLayer(model.d_model, model.heads, model.dim_feedforward, dropout=0.0,
                                                  activation="gelu", batch_first=True, dtype=torch.float64)
        attention = ours.self_attention
        theirs.self_attn.in_proj_weight.data = torch.tensor(attention.in_weight.numpy().T)
        theirs.self_attn.in_proj_bias.data = torch.tensor(attention.in_bias.numpy())
        theirs.self_attn.out_proj.weight.data = torch.tensor(attention.out_weight.numpy().T)
        theirs.self_attn.out_proj.bias.data = torch.tensor(attention.out_bias.numpy())
        theirs.linear1, theirs.linear2 = linear(ours.linear1), linear(ours.linear2)
        for name in ("norm1", "norm2"):
            getattr(theirs, name).weight.data = torch.tensor(getattr(ours, name).gamma.numpy())
            getattr(theirs, name).bias.data = torch.tensor(getattr(ours, name).beta.numpy())
        layers.append(theirs)
    x_enc, y_enc, hidden, out = (linear(m) for m in (model.x_encoder, model.y_encoder, model.decoder_hidden,
                                                      model.decoder))

    def forward(x_train, y_train, x_query):
        tokens = torch.cat([x_enc(x_train) + y_enc(y_train[..., None]), x_enc(x_query)], dim=1)
        blocked = ~torch.tensor(models.pfn_attention_mask(x_train.shape[1], x_query.shape[1]))
        for layer in layers:
            tokens = layer(tokens, src_mask=blocked)
        return out(torch.nn.functional.gelu(hidden(tokens[:, x_train.shape[1]:])))
    return forward


def test_forward_and_gradients_match_a_torch_rewrite(float64):
    model = _regression_pfn()
    arrays = randn(2, 5, 2, seed=8), randn(2, 5, seed=9), randn(2, 3, 2, seed=10)
    ours = [lamina.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_ours, out_theirs = model(*ours), _torch_pfn(model)(*theirs)
    np.testing.assert_allclose(out_ours.numpy(), out_theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = randn(*out_ours.shape, seed=11)
    (out_ours * lamina.tensor(up)).sum().backward()
    (out_theirs * torch.tensor(up)).sum().backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-8, atol=1e-11)


def test_gradients(float64):
    model = _regression_pfn()
    y_query = randn(2, 3, seed=14)
    assert check_gradients(lambda a, b, c: model(a, b, c), randn(2, 4, 2, seed=12), randn(2, 4, seed=13),
                           randn(2, 3, 2, seed=15))
    assert check_gradients(lambda a, b: model.loss(a, b, randn(2, 3, 2, seed=15), y_query),
                           randn(2, 4, 2, seed=12), randn(2, 4, seed=13))


# -- predictions, errors and saving ------------------------------------------------------------
def test_predictions():
    model = _regression_pfn()
    x_train, y_train, x_query = randn(2, 5, 2, seed=1), randn(2, 5, seed=2), randn(2, 4, 2, seed=3)
    prediction = model.predict(x_train, y_train, x_query)
    assert isinstance(prediction, models.BarPrediction) and prediction.mean.shape == (2, 4)
    assert prediction.quantiles([0.1, 0.5, 0.9]).shape == (2, 4, 3)
    assert prediction.log_density(randn(2, 4)).shape == (2, 4)
    np.testing.assert_allclose(prediction.mean, models.bar_mean(_outputs(model, x_train, y_train, x_query),
                                                                model.borders).numpy(), rtol=1e-5)
    single = model.predict(x_train[1], y_train[1], x_query[1])
    np.testing.assert_allclose(single.mean, prediction.mean[1], rtol=1e-5)
    classifier = models.PFN(2, 3, d_model=8, heads=2, layers=1, task="classification")
    probs = classifier.predict(x_train, np.array([[0, 1, 2, 1, 0]] * 2), x_query)
    assert probs.shape == (2, 4, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_training_sets_the_borders_from_the_prior_and_stops_on_time():
    model = models.PFN(1, 8, d_model=8, heads=2, layers=1, tails=False)
    prior = GPPrior(lengthscale=(0.5, 0.5), noise=(0.1, 0.1))
    result = models.train_pfn(model, prior, 1000, batch_size=2, n_points=10, border_samples=2000, seed=0,
                              max_seconds=0.0)
    assert len(result.losses) == 1 and np.isfinite(result.losses[0])
    samples = prior.sample(200, 10, np.random.default_rng(0)).y          # the same draws as train_pfn's
    np.testing.assert_array_equal(model.borders, models.bar_borders(samples, 8))
    far = np.full((2, 3), 10.0 * model.borders[-1])                     # outside the borders: clipped, finite
    assert np.isfinite(model.loss(randn(2, 4, 1), randn(2, 4), randn(2, 3, 1), far).numpy())


def test_errors():
    model = _regression_pfn()
    with pytest.raises(ShapeError, match=r"PFN: got x_train \(2, 5, 3\), y_train \(2, 5\), x_query \(2, 4, 2\); "
                                         r"expected \(B, n_train >= 1, 2\)"):
        model(np.zeros((2, 5, 3)), np.zeros((2, 5)), np.zeros((2, 4, 2)))
    with pytest.raises(ShapeError, match="PFN: got x_train"):
        model(np.zeros((2, 5, 2)), np.zeros((2, 4)), np.zeros((2, 4, 2)))
    classifier = models.PFN(2, 3, d_model=8, heads=2, layers=1, task="classification")
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\), got values in \[0, 3\]"):
        classifier(np.zeros((1, 2, 2)), np.array([[0, 3]]), np.zeros((1, 1, 2)))
    with pytest.raises(ShapeError, match=r"PFN.loss: got y_query of shape \(2, 3\) .* expected \(2, 4\)"):
        model.loss(np.zeros((2, 5, 2)), np.zeros((2, 5)), np.zeros((2, 4, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="task must be one of"):
        models.PFN(2, 3, task="ranking")
    with pytest.raises(ValueError, match="expected 7 increasing borders"):
        model.set_borders(np.arange(5.0))
    with pytest.raises(ValueError, match="a classification prior .* cannot train a regression PFN"):
        models.train_pfn(model, MLPClassPrior(2), 1)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_save_and_load(tmp_path, task):
    lamina.manual_seed(0)
    model = models.PFN(2, 4, d_model=8, heads=2, layers=2, task=task)
    y_train = randn(2, 5, seed=2) if task == "regression" else np.array([[0, 1, 3, 2, 1]] * 2)
    inputs = randn(2, 5, 2, seed=1), y_train, randn(2, 3, 2, seed=3)
    model(*inputs)
    perturb_parameters(model, scale=0.1)
    if task == "regression":
        model.set_borders([-2.0, -0.5, 0.1, 0.7, 3.0])
    config = model.get_config()
    assert config["task"] == task and config["n_outputs"] == 4 and config["d_model"] == 8
    lamina.save(model, tmp_path / "pfn.lamina")
    loaded = lamina.load(tmp_path / "pfn.lamina")
    model.eval()
    np.testing.assert_array_equal(_outputs(loaded, *inputs), _outputs(model, *inputs))
    if task == "regression":
        np.testing.assert_array_equal(loaded.borders, [-2.0, -0.5, 0.1, 0.7, 3.0])


# -- learning ---------------------------------------------------------------------------------------
def _gp_posterior_mean(x_train, y_train, x_query, lengthscale, noise):
    """The exact GP posterior mean K*(K + sigma_n^2 I)^-1 y with the true hyperparameters."""
    k = rbf_covariance(x_train, x_train, lengthscale) + noise ** 2 * np.eye(len(x_train))
    return rbf_covariance(x_query, x_train, lengthscale) @ np.linalg.solve(k, y_train)


def gp_figures(seed: int) -> dict:
    """Train on the GP prior; the figures on 64 fresh tasks of 15 training and 25 query points."""
    lamina.manual_seed(seed)
    prior = GPPrior(1, lengthscale=(0.5, 1.0), noise=(0.1, 0.2))
    model = models.PFN(1, 50, d_model=32, heads=4, layers=2)
    result = models.train_pfn(model, prior, 500, batch_size=16, n_points=40, lr=3e-3, seed=seed)
    tasks = prior.sample(64, 40, np.random.default_rng(123))
    n_train = 15
    prediction = model.predict(tasks.x[:, :n_train], tasks.y[:, :n_train], tasks.x[:, n_train:])
    pfn_error, context_error, context_nll = [], [], []
    for b in range(64):
        x_train, y_train, x_query = tasks.x[b, :n_train], tasks.y[b, :n_train], tasks.x[b, n_train:]
        exact = _gp_posterior_mean(x_train, y_train, x_query, tasks.lengthscale[b], tasks.noise[b])
        pfn_error.append(np.mean((prediction.mean[b] - exact) ** 2))
        context_error.append(np.mean((y_train.mean() - exact) ** 2))
        mu, sigma = y_train.mean(), y_train.std()
        context_nll.append(np.mean(0.5 * np.log(2 * np.pi * sigma ** 2) + (tasks.y[b, n_train:] - mu) ** 2
                                   / (2 * sigma ** 2)))
    return {"pfn_error": np.mean(pfn_error), "context_error": np.mean(context_error),
            "pfn_nll": -prediction.log_density(tasks.y[:, n_train:]).mean(), "context_nll": np.mean(context_nll),
            "seconds": result.seconds, "losses": result.losses}


def classification_figures(seed: int) -> dict:
    """Train on the random-MLP prior; in-context accuracy on 64 fresh tasks (50 training, 50 query points)."""
    lamina.manual_seed(seed)
    prior = MLPClassPrior(2, 3, hidden=16, hidden_layers=1, noise=0.1)
    model = models.PFN(2, 3, d_model=32, heads=4, layers=2, task="classification")
    result = models.train_pfn(model, prior, 120, batch_size=16, n_points=60, lr=3e-3, seed=seed)
    tasks = prior.sample(64, 100, np.random.default_rng(7))
    probs = model.predict(tasks.x[:, :50], tasks.y[:, :50], tasks.x[:, 50:])
    majority = [np.mean(tasks.y[b, 50:] == np.bincount(tasks.y[b, :50], minlength=3).argmax()) for b in range(64)]
    return {"accuracy": np.mean(probs.argmax(-1) == tasks.y[:, 50:]), "majority": np.mean(majority),
            "seconds": result.seconds}


def test_a_pfn_trained_on_the_gp_prior_approximates_the_gp_posterior():
    figures = gp_figures(SEED)
    # measured (seeds 0, 1, 2; the same with OPENBLAS_CORETYPE=SkylakeX to 0.001): squared error to the
    # exact GP posterior mean 0.093, 0.105, 0.090 against 0.558 for the context's mean; NLL 0.41, 0.38,
    # 0.44 against 1.05 for a Gaussian fitted to the context; 4-13 s of training
    assert figures["pfn_error"] < 0.35 * figures["context_error"]
    assert figures["pfn_nll"] < figures["context_nll"] - 0.3
    assert figures["losses"][-1] < figures["losses"][0] and figures["seconds"] < 60


def test_a_pfn_trained_on_the_mlp_prior_classifies_in_context():
    figures = classification_figures(SEED)
    # measured (seed 0, 120 steps, OpenBLAS's own and Haswell kernels): accuracy 0.811 on fresh tasks
    # (chance 1/3, the context's majority class 0.396)
    assert figures["accuracy"] > 0.65 and figures["accuracy"] > figures["majority"] + 0.2


def test_readme_example_runs():
    printed, names = run_readme_section("Prior-fitted networks")
    assert isinstance(names["model"], models.PFN)
    fields = printed.split()
    assert fields[0] == "(5,)" and fields[1] == "(5,3)"
