"""GradScaler: the same scale sequence, skipped steps and parameters as torch.amp.GradScaler
on the same gradients (inf/NaN injected), every lamina optimizer behind it, clipping after
unscale_, the state round trip, misuse errors, and mixed-precision training on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.amp import GradScaler, autocast
from lamina.data import load_digits, train_val_test_split
from lamina.optim import SGD, clip_grad_norm
from lamina.train import Trainer

RNG = np.random.default_rng(0)
START = RNG.standard_normal((4, 3)).astype(np.float32)

# One upstream "coefficient" array per iteration: the loss is sum(w * c), so dJ/dw = c.
# Iterations 2 and 5 overflow (inf, NaN), the rest are finite.
COEFFICIENTS = [RNG.standard_normal((4, 3)).astype(np.float32) for _ in range(9)]
COEFFICIENTS[2][0, 1] = np.inf
COEFFICIENTS[5][3, 2] = np.nan
SETTINGS = {"init_scale": 2.0 ** 10, "growth_factor": 2.0, "backoff_factor": 0.25, "growth_interval": 2}


def run_lamina(clip_at: set[int] = frozenset()):
    w = lamina.tensor(START.copy(), requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.9)
    scaler = GradScaler(**SETTINGS)
    trace = []
    for i, c in enumerate(COEFFICIENTS):
        opt.zero_grad()
        scaler.scale(F.sum(w * lamina.tensor(c))).backward()
        if i in clip_at:
            scaler.unscale_(opt)
            clip_grad_norm([w], 0.5)
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), w.numpy().copy(), scaler.state_dict()["_growth_tracker"]))
    return trace, scaler


def run_torch(clip_at: set[int] = frozenset()):
    w = torch.tensor(START.copy(), requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", **SETTINGS)
    trace = []
    for i, c in enumerate(COEFFICIENTS):
        opt.zero_grad()
        scaler.scale((w * torch.tensor(c)).sum()).backward()
        if i in clip_at:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([w], 0.5)
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), w.detach().numpy().copy(), scaler.state_dict()["_growth_tracker"]))
    return trace, scaler


@pytest.mark.parametrize("clip_at", [set(), {0, 3, 4, 5}], ids=["plain", "unscale-clip-step"])
def test_scale_sequence_skips_and_parameters_equal_torch(clip_at):
    ours, _ = run_lamina(clip_at)
    theirs, _ = run_torch(clip_at)
    scales = [s for s, _, _ in ours]
    assert scales == [s for s, _, _ in theirs]
    assert [t for _, _, t in ours] == [t for _, _, t in theirs]
    # the rule itself: backoff on the two overflows, growth after every 2 good steps
    assert scales[2] == scales[1] * 0.25 and scales[5] == scales[4] * 0.25 and scales[1] == 2 * scales[0]
    for k, ((_, a, _), (_, b, _)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"iteration {k}")


def test_overflowing_steps_leave_the_parameters_and_optimizer_alone():
    trace, _ = run_lamina()
    np.testing.assert_array_equal(trace[2][1], trace[1][1])
    np.testing.assert_array_equal(trace[5][1], trace[4][1])
    assert not np.array_equal(trace[3][1], trace[2][1])


def test_state_dict_equals_torch_and_round_trips():
    _, ours = run_lamina()
    _, theirs = run_torch()
    assert ours.state_dict() == theirs.state_dict()
    restored = GradScaler()
    restored.load_state_dict(ours.state_dict())
    assert restored.state_dict() == ours.state_dict()
    for scaler in (ours, restored):                 # both continue the same way
        w = lamina.tensor(START.copy(), requires_grad=True)
        opt = SGD([w], lr=0.1)
        scaler.scale(F.sum(w)).backward()
        scaler.step(opt)
        scaler.update()
    assert restored.state_dict() == ours.state_dict()


def test_explicit_new_scale_and_growth_stops_at_infinity():
    scaler = GradScaler(init_scale=2.0 ** 127, growth_interval=1)
    w = lamina.tensor(START.copy(), requires_grad=True)
    opt = SGD([w], lr=0.0)
    scaler.scale(F.sum(w * 1e-30)).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 127          # 2^128 overflows float32: kept
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0


def _optimizers():
    found = {"SGD": lambda p: SGD(p, lr=0.1, momentum=0.9),
             "Lookahead": lambda p: optim.Lookahead(SGD(p, lr=0.1), k=2)}
    for name in ("Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Lion", "Rprop",
                 "ASGD", "Adafactor", "LAMB", "LARS", "Muon", "SparseAdam"):
        found[name] = getattr(optim, name)
    return found


@pytest.mark.parametrize("name", sorted(_optimizers()))
def test_every_optimizer_steps_on_the_unscaled_gradients_and_skips_on_inf(name):
    make = _optimizers()[name]
    scaled, plain = (lamina.tensor(START.copy(), requires_grad=True) for _ in range(2))
    opt_scaled, opt_plain = make([scaled]), make([plain])
    scaler = GradScaler(init_scale=2.0 ** 12)       # a power of two: unscaling is exact
    for c in COEFFICIENTS[:2]:
        for opt in (opt_scaled, opt_plain):
            opt.zero_grad()
        scaler.scale(F.sum(scaled * lamina.tensor(c))).backward()
        F.sum(plain * lamina.tensor(c)).backward()
        scaler.step(opt_scaled)
        scaler.update()
        opt_plain.step()
        np.testing.assert_allclose(scaled.numpy(), plain.numpy(), rtol=1e-6, atol=1e-7)
    before = scaled.numpy().copy()
    opt_scaled.zero_grad()
    scaler.scale(F.sum(scaled * lamina.tensor(COEFFICIENTS[2]))).backward()
    assert scaler.step(opt_scaled) is None
    scaler.update()
    np.testing.assert_array_equal(scaled.numpy(), before)
    assert scaler.get_scale() == 2.0 ** 11


def test_misuse_is_reported():
    w = lamina.tensor(START.copy(), requires_grad=True)
    opt = SGD([w], lr=0.1)
    scaler = GradScaler()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    scaler.scale(F.sum(w)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(ValueError, match="backoff_factor"):
        GradScaler(backoff_factor=2.0)
    with pytest.raises(RuntimeError, match="empty"):
        GradScaler().load_state_dict({})


def test_disabled_scaler_passes_everything_through():
    w = lamina.tensor(START.copy(), requires_grad=True)
    opt = SGD([w], lr=0.1)
    scaler = GradScaler(enabled=False)
    loss = F.sum(w)
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    loss.backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(w.numpy(), START - 0.1)


# -- mixed-precision training ---------------------------------------------------------------

def digits_split():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def mlp() -> nn.Sequential:
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10), nn.Softmax())
    model.build((None, 64))
    return model


def test_float16_training_on_digits_reaches_the_float32_accuracy():
    xtr, ytr, xte, yte = digits_split()
    accuracy = {}
    for amp in (False, True):
        model = mlp()
        trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=1e-2), verbose=0,
                          clip_norm=5.0, amp=amp)
        trainer.fit((xtr, ytr), epochs=4, batch_size=64, seed=0)
        accuracy[amp] = float((trainer.predict(xte).argmax(axis=1) == yte).mean())
        assert all(p.dtype == np.float32 for p in model.parameters())
    print(f"digits test accuracy: float32 {accuracy[False]:.4f}, autocast float16 + GradScaler {accuracy[True]:.4f}")
    assert accuracy[False] > 0.93
    assert accuracy[True] >= accuracy[False] - 0.01


def test_hand_loop_with_autocast_and_scaler_trains():
    xtr, ytr, _, _ = digits_split()
    model = mlp()
    opt = optim.Adam(model, lr=1e-2)
    scaler = GradScaler()
    losses = []
    for start in range(0, 1280, 64):
        opt.zero_grad()
        with autocast():
            logits = model[:-1](lamina.tensor(xtr[start:start + 64]))
            loss = F.categorical_cross_entropy(logits, np.eye(10)[ytr[start:start + 64]], from_logits=True)
        assert logits.dtype == np.float16 and loss.dtype == np.float32
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.4 * losses[0]


def test_trainer_refuses_amp_with_a_closure_optimizer():
    model = mlp()
    with pytest.raises(ValueError, match="amp"):
        Trainer(model, "categorical_cross_entropy", optim.sam.SAM(SGD(model, lr=0.1)), verbose=0, amp=True)


@pytest.mark.parametrize("factors", [(2.0, 0.3), (1.0001, 0.5), (1.7, 0.77)])
def test_factors_that_are_not_powers_of_two_round_as_torch(factors):
    growth, backoff = factors
    ours = GradScaler(init_scale=3.0, growth_factor=growth, backoff_factor=backoff, growth_interval=1)
    theirs = torch.amp.GradScaler("cpu", init_scale=3.0, growth_factor=growth, backoff_factor=backoff,
                                  growth_interval=1)
    weight, t_weight = lamina.tensor([1.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    ours_opt, theirs_opt = SGD([weight], lr=0.1), torch.optim.SGD([t_weight], lr=0.1)
    for step in range(12):
        factor = float("inf") if step % 3 == 0 else 1.0      # backoffs and growths interleaved
        ours_opt.zero_grad()
        theirs_opt.zero_grad()
        ours.scale((weight * factor).sum()).backward()
        theirs.scale((t_weight * factor).sum()).backward()
        ours.step(ours_opt)
        theirs.step(theirs_opt)
        ours.update()
        theirs.update()
        assert np.float32(ours.get_scale()) == np.float32(theirs.get_scale()), step


# -- dtypes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [np.array(3.0, np.float16), np.full(3, 3.0, np.float16), np.array(3.0, np.float32),
                                  np.full(2, 0.5, np.float64)], ids=["0-d half", "half", "0-d float", "double"])
def test_scaled_loss_has_torch_dtype(loss):
    ours = GradScaler().scale(lamina.tensor(loss, dtype=loss.dtype))
    theirs = torch.amp.GradScaler("cpu").scale(torch.tensor(loss))
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    # a 0-d float16 loss times 2^16 is finite only in float32; a half tensor with axes overflows in both
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_unscale_refuses_float16_gradients_as_torch_and_touches_nothing():
    low = lamina.tensor(np.ones(2), dtype=np.float16, requires_grad=True)
    full = lamina.tensor(np.ones(3), requires_grad=True)
    opt = SGD([full, low], lr=1.0)
    full.grad, low.grad = np.full(3, 4.0, np.float32), np.array([1000.0, 3000.0], np.float16)
    scaler = GradScaler(init_scale=2.0 ** 26)
    with pytest.raises(ValueError, match=r"GradScaler.unscale_: attempting to unscale float16 gradients \(of "
                                         r"shapes \[\(2,\)\]\)"):
        scaler.unscale_(opt)
    np.testing.assert_array_equal(full.grad, np.full(3, 4.0))
    reference = torch.ones(2, dtype=torch.float16, requires_grad=True)
    reference.grad = torch.tensor([1000.0, 3000.0], dtype=torch.float16)
    torch_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 26)
    torch_scaler.scale(torch.tensor(1.0))
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        torch_scaler.unscale_(torch.optim.SGD([reference], lr=1.0))


def test_step_without_any_gradient_is_an_error_as_torch():
    w = lamina.tensor(START.copy(), requires_grad=True)
    opt = SGD([w], lr=0.1)
    scaler = GradScaler()
    scaler.scale(F.sum(w))                               # no backward: w has no gradient
    with pytest.raises(RuntimeError, match=r"GradScaler.step: no inf checks were recorded for this optimizer"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match=r"GradScaler.update: no inf checks were recorded"):
        scaler.update()
    np.testing.assert_array_equal(w.numpy(), START)
    reference = torch.tensor(START.copy(), requires_grad=True)
    torch_scaler = torch.amp.GradScaler("cpu")
    torch_scaler.scale(reference.sum())
    with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer"):
        torch_scaler.step(torch.optim.SGD([reference], lr=0.1))
