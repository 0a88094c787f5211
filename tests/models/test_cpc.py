"""Contrastive Predictive Coding: the loss against a float64 torch rewrite, gradients, the
negative sampler, the encoder's shapes, causality of the context, saving, and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import models, optim
from lamina.errors import ShapeError
from lamina.models import CPC, cpc_features, cpc_info_nce, cpc_negative_indices


def small_cpc(**options) -> CPC:
    settings = {"encoder": ((6, 4, 2), (5, 3, 2)), "context_dim": 4, "prediction_steps": 3, "num_negatives": 5}
    return CPC(**{**settings, **options})


# -- the encoder and the context --------------------------------------------------------------
@pytest.mark.parametrize("encoder, length", [(((4, 10, 5), (4, 8, 4), (3, 4, 2)), 400), (((3, 3, 1),), 9),
                                             (((5, 4, 2), (5, 4, 2)), 37)])
def test_encoder_downsamples_by_its_strides(encoder, length):
    model = CPC(encoder=encoder, context_dim=3, prediction_steps=1)
    expected = length
    for _, kernel, stride in encoder:
        expected = (expected - kernel) // stride + 1
    z = model.encode(randn(2, length).astype(np.float32))
    assert z.shape == (2, expected, encoder[-1][0]) and model.num_frames(length) == expected
    assert model(randn(2, length).astype(np.float32)).shape == (2, expected, 3)
    size, hop = model.receptive_field
    assert hop == int(np.prod([s for _, _, s in encoder]))
    assert model.num_frames(size) == 1 and model.num_frames(size + hop - 1) == 1 and model.num_frames(size + hop) == 2


def test_channels_last_inputs_and_shape_errors():
    model = small_cpc(in_channels=2)
    assert model.encode(randn(3, 40, 2).astype(np.float32)).shape == (3, model.num_frames(40), 5)
    with pytest.raises(ShapeError, match=r"CPC: expected inputs \(batch, steps, 2\)"):
        model.encode(randn(3, 40).astype(np.float32))
    with pytest.raises(ShapeError, match="shorter than the encoder's receptive field of 8 steps"):
        small_cpc().encode(randn(1, 7).astype(np.float32))
    with pytest.raises(ValueError, match="negative_source must be one of"):
        small_cpc(negative_source="anywhere")
    with pytest.raises(ValueError, match="encoder must list"):
        CPC(encoder=((4, 3),))


def test_the_context_at_t_ignores_inputs_after_frame_t():
    model = small_cpc()
    x = randn(2, 60).astype(np.float32)
    c = cpc_features(model, x)
    size, hop = model.receptive_field
    for t in (0, 4, 9):
        changed = x.copy()
        changed[:, t * hop + size:] += 3.0 * randn(2, 60 - t * hop - size, seed=t + 1).astype(np.float32)
        after = cpc_features(model, changed)
        np.testing.assert_array_equal(after[:, :t + 1], c[:, :t + 1])
        assert np.abs(after[:, t + 1:] - c[:, t + 1:]).max() > 1e-3


# -- the negative sampler ---------------------------------------------------------------------
@pytest.mark.parametrize("source", models.NEGATIVE_SOURCES)
def test_negatives_are_never_the_positive_and_come_from_their_source(source):
    batch, frames, step, m = 3, 7, 2, 400
    negatives = cpc_negative_indices(batch, frames, step, m, source, np.random.default_rng(0))
    assert negatives.shape == (batch, frames - step, m) and negatives.dtype.kind == "i"
    rows = np.arange(batch)[:, None, None]
    positives = rows * frames + np.arange(step, frames)[None, :, None]
    assert (negatives != positives).all() and negatives.min() >= 0 and negatives.max() < batch * frames
    same = negatives // frames == rows
    if source == "same_sequence":
        assert same.all()
    elif source == "other_sequences":
        assert not same.any()
    else:
        assert 0.2 < same.mean() < 0.45          # 1 / batch of the candidates share the sequence
    for n in range(batch):                       # every allowed candidate is drawn, uniformly
        for t in range(frames - step):
            allowed = np.arange(batch * frames)
            allowed = allowed[allowed != positives[n, t, 0]]
            if source == "same_sequence":
                allowed = allowed[allowed // frames == n]
            elif source == "other_sequences":
                allowed = allowed[allowed // frames != n]
            counts = np.bincount(negatives[n, t], minlength=batch * frames)[allowed]
            assert counts.min() > 0 and counts.sum() == m


def test_sampling_is_seeded_and_checked():
    first, second = small_cpc(seed=3), small_cpc(seed=3)
    for a, b in zip(first.sample_negatives(2, 9), second.sample_negatives(2, 9)):
        np.testing.assert_array_equal(a, b)
    assert [n.shape for n in first.sample_negatives(2, 9)] == [(2, 8, 5), (2, 7, 5), (2, 6, 5)]
    other = small_cpc(seed=4).sample_negatives(2, 9)
    assert any(not np.array_equal(a, b) for a, b in zip(first.sample_negatives(2, 9), other))
    with pytest.raises(ValueError, match="'other_sequences' has no negatives with batch=1"):
        cpc_negative_indices(1, 5, 1, 3, "other_sequences")
    with pytest.raises(ValueError, match="step 5 needs 1 <= step < frames = 5"):
        cpc_negative_indices(2, 5, 5, 3)


# -- the loss ---------------------------------------------------------------------------------
def torch_cpc_loss(params: dict, x: torch.Tensor, negatives, strides, context_dim: int):
    """CPC's loss and accuracies written out in torch from the paper's formulas."""
    h = x.unsqueeze(-1).transpose(1, 2)                       # (N, C, L)
    for i, stride in enumerate(strides):
        weight = params[f"convs.{i}.weight"].permute(0, 2, 1)  # (K, f, C) -> (K, C, f)
        h = torch.relu(torch.nn.functional.conv1d(h, weight, params[f"convs.{i}.bias"], stride=stride))
    z = h.transpose(1, 2)                                      # (N, T, D)
    n, frames, dim = z.shape
    state, contexts = torch.zeros(n, context_dim, dtype=z.dtype), []
    w_x, w_h = params["gru.kernel"], params["gru.recurrent_kernel"]
    b, b_h = params["gru.bias"], params["gru.recurrent_bias"]
    for t in range(frames):                                    # PyTorch's GRU cell, gates r, z, n
        gx, gh = z[:, t] @ w_x + b, state @ w_h + b_h
        r = torch.sigmoid(gx[:, :context_dim] + gh[:, :context_dim])
        u = torch.sigmoid(gx[:, context_dim:2 * context_dim] + gh[:, context_dim:2 * context_dim])
        candidate = torch.tanh(gx[:, 2 * context_dim:] + r * gh[:, 2 * context_dim:])
        state = (1 - u) * candidate + u * state
        contexts.append(state)
    c = torch.stack(contexts, dim=1)
    losses, accuracies = [], []
    for k, negative in enumerate(negatives, start=1):
        prediction = c[:, :frames - k] @ params[f"predictors.{k - 1}.weight"]      # W_k c_t
        candidates = torch.cat([z[:, k:].unsqueeze(2), z.reshape(n * frames, dim)[torch.as_tensor(negative)]], 2)
        scores = torch.einsum("ntmd,ntd->ntm", candidates, prediction)
        losses.append(torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]),
                                                        torch.zeros(scores.shape[0] * scores.shape[1],
                                                                    dtype=torch.long)))
        accuracies.append((scores[..., 0] > scores[..., 1:].amax(-1)).double().mean().item())
    return torch.stack(losses).mean(), np.array(accuracies)


@pytest.mark.parametrize("source", ["same_sequence", "batch"])
def test_loss_and_gradients_match_a_torch_rewrite_in_float64(source):
    lamina.manual_seed(1)
    model = small_cpc(negative_source=source).double()
    x = randn(3, 50, seed=2)
    frames = model.num_frames(50)
    negatives = model.sample_negatives(3, frames)
    inputs = lamina.tensor(x, dtype=np.float64, requires_grad=True)
    loss, accuracies = model.cpc_loss(inputs, negatives)
    loss.backward()

    params = {name: torch.tensor(lamina.backend.to_numpy(p.data), requires_grad=True)
              for name, p in model.named_parameters()}
    x_torch = torch.tensor(x, requires_grad=True)
    expected, expected_accuracies = torch_cpc_loss(params, x_torch, negatives, (2, 2), 4)
    expected.backward()
    assert loss.dtype == np.float64 and loss.shape == ()
    np.testing.assert_allclose(float(loss.numpy()), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(accuracies, expected_accuracies)
    np.testing.assert_allclose(inputs.grad, x_torch.grad.numpy(), rtol=1e-9, atol=1e-13)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=name)


def test_info_nce_core_gradient_check_and_values():
    z, p1, p2 = randn(2, 5, 3), randn(2, 4, 3, seed=1), randn(2, 3, 3, seed=2)
    rng = np.random.default_rng(0)
    negatives = [cpc_negative_indices(2, 5, k, 4, "batch", rng) for k in (1, 2)]
    assert check_gradients(lambda z_, a, b: cpc_info_nce(z_, [a, b], negatives)[0], z, p1, p2)
    as64 = [lamina.tensor(a, dtype=np.float64) for a in (z, p1, p2)]
    loss, accuracies = cpc_info_nce(as64[0], as64[1:], negatives)
    assert loss.dtype == np.float64
    by_hand = []                                  # one row at a time, with NumPy
    for k, (p, negative) in enumerate(zip((p1, p2), negatives), start=1):
        rows = []
        for n in range(2):
            for t in range(5 - k):
                scores = np.concatenate([[z[n, t + k] @ p[n, t]], z.reshape(10, 3)[negative[n, t]] @ p[n, t]])
                rows.append(np.log(np.exp(scores).sum()) - scores[0])
        by_hand.append(np.mean(rows))
    np.testing.assert_allclose(float(loss.numpy()), np.mean(by_hand), rtol=1e-12)
    assert accuracies.shape == (2,) and ((0 <= accuracies) & (accuracies <= 1)).all()


def test_whole_model_gradient_check_in_float64():
    lamina.manual_seed(2)
    model = CPC(encoder=((3, 4, 2),), context_dim=2, prediction_steps=2, num_negatives=3).double()
    x = randn(2, 16, seed=5)
    negatives = model.sample_negatives(2, model.num_frames(16))
    assert check_gradients(lambda inputs: model.cpc_loss(inputs, negatives)[0], x)


def test_save_and_load_round_trip(tmp_path):
    model = small_cpc(negative_source="other_sequences", seed=7)
    x = randn(2, 40).astype(np.float32)
    lamina.save(model, tmp_path / "cpc.safetensors")
    twin = lamina.load(tmp_path / "cpc.safetensors")
    assert type(twin) is CPC and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(cpc_features(twin, x), cpc_features(model, x))
    negatives = model.sample_negatives(2, model.num_frames(40))
    assert float(twin.cpc_loss(x, negatives)[0].numpy()) == float(model.cpc_loss(x, negatives)[0].numpy())


# -- learning ---------------------------------------------------------------------------------
FREQUENCIES = (0.04, 0.09, 0.16)          # cycles per step, one per hidden state


def switching_sines(n: int, length: int = 256, seed: int = 0, noise: float = 0.8):
    """Noisy sines whose frequency (the hidden state) switches every 48-95 steps: (x, states)."""
    rng = np.random.default_rng(seed)
    x, states = np.empty((n, length)), np.empty((n, length), dtype=int)
    for i in range(n):
        start = 0
        while start < length:
            run = int(rng.integers(48, 96))
            states[i, start:start + run] = rng.integers(len(FREQUENCIES))
            start += run
        phase = np.cumsum(2 * np.pi * np.asarray(FREQUENCIES)[states[i]]) + rng.uniform(0, 2 * np.pi)
        x[i] = np.sin(phase) + noise * rng.standard_normal(length)
    return x.astype(np.float32), states


def probe_accuracy(model: CPC) -> float:
    """Held-out accuracy of a ridge-regression probe from c_t to the state at the frame's last input."""
    size, hop = model.receptive_field

    def data(seed):
        x, states = switching_sines(32, seed=seed)
        features = cpc_features(model, x).reshape(-1, model.gru.units)
        labels = states[:, np.arange(model.num_frames(x.shape[1])) * hop + size - 1].ravel()
        return np.hstack([features, np.ones((len(features), 1))]), labels

    (a, y), (a_test, y_test) = data(100), data(200)
    weights = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ np.eye(len(FREQUENCIES))[y])
    return float((np.argmax(a_test @ weights, axis=1) == y_test).mean())


def test_cpc_training_makes_the_hidden_state_linearly_readable():
    lamina.manual_seed(0)
    model = CPC(encoder=((16, 8, 4), (16, 4, 2)), context_dim=16, prediction_steps=4, num_negatives=8,
                negative_source="batch", seed=0)
    untrained = probe_accuracy(model)
    optimizer = optim.Adam(model, lr=3e-3)
    for step in range(300):
        loss, accuracies = model.cpc_loss(switching_sines(16, seed=1000 + step)[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = probe_accuracy(model)
    print(f"probe accuracy untrained {untrained:.3f}, trained {trained:.3f}; final step accuracies {accuracies}")
    assert accuracies[0] > 0.6 and trained > untrained + 0.12, (untrained, trained, accuracies)


def test_readme_example_trains_cpc():
    printed, names = run_readme_section("Contrastive Predictive Coding")
    before, after = (float(v) for v in printed.split()[1::2])
    assert after < before and names["features"].shape == (4, names["model"].num_frames(400), 16)
