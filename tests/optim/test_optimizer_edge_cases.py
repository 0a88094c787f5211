"""Optimizers, clipping and schedules at their edges, against torch (float64): ASGD maximising with
weight decay, gradients assigned as NumPy scalars, norms of negative order with a zero gradient,
LambdaSchedule in a chain, ReduceOnPlateau resumed after its base rate reached 0, and a parameter
given twice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import optim
from lamina.optim import clip_grad_norm, clip_grad_value, schedules


def _pair(values):
    ours = lamina.tensor(np.array(values, dtype=np.float64), requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(np.array(values, dtype=np.float64), requires_grad=True)
    return ours, theirs


# -- ASGD, maximize=True with weight decay -----------------------------------------------

@pytest.mark.parametrize("lambd", [0.0, 0.02])
def test_asgd_maximize_negates_the_gradient_only_not_the_weight_decay(lambd):
    w0 = np.array([1.0, -2.0, 0.5])
    ours, theirs = _pair(w0)
    kwargs = {"lr": 0.1, "lambd": lambd, "weight_decay": 0.5, "maximize": True, "t0": 2}
    lopt, topt = optim.ASGD([ours], **kwargs), torch.optim.ASGD([theirs], **kwargs)
    for step in range(5):
        g = np.array([0.5, 0.5, -1.0]) * (step + 1) + ours.data
        ours.grad, theirs.grad = g.copy(), torch.tensor(g)
        lopt.step()
        topt.step()
        assert_close(ours.data, theirs.detach().numpy(), 1e-12, f"ASGD step {step}")
        assert_close(lopt.state[0]["ax"], topt.state[theirs]["ax"].numpy(), 1e-12, f"ax after step {step}")
    assert np.array_equal(ours.grad, g)          # the gradient the user reads is left as it was


# -- gradients assigned as NumPy scalars --------------------------------------------------

def test_a_numpy_scalar_assigned_to_grad_is_stored_as_a_0d_array_of_its_dtype():
    p = lamina.tensor(np.array(1.5, dtype=np.float32), requires_grad=True)
    p.grad = 2 * p.data                          # NumPy: an np.float32 scalar, not an array
    assert type(p.grad) is np.ndarray and p.grad.shape == () and p.grad.dtype == np.float32
    p.grad = 3.0
    assert type(p.grad) is np.ndarray and p.grad.dtype == np.float64 and float(p.grad) == 3.0
    g = np.ones(4)
    p.grad = g
    assert p.grad is g                           # arrays are kept as given, not copied
    p.grad = None
    assert p.grad is None


def test_sgd_momentum_with_numpy_scalar_gradients_matches_torch():
    ours, theirs = _pair(1.0)
    lopt = optim.SGD([ours], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
    for step in range(4):
        ours.grad = 2 * ours.data
        theirs.grad = 2 * theirs.detach()
        lopt.step()
        topt.step()
        assert_close(ours.data, theirs.detach().numpy(), 1e-12, f"SGD step {step}")


def test_clipping_a_numpy_scalar_gradient_changes_it_in_place_as_torch():
    ours, theirs = _pair(3.0)
    ours.grad, theirs.grad = 2 * ours.data, 2 * theirs.detach()
    total = clip_grad_norm([ours], 1.0)
    expected = torch.nn.utils.clip_grad_norm_([theirs], 1.0).item()
    assert total == pytest.approx(expected)
    assert_close(ours.grad, theirs.grad.numpy(), 1e-12, "clipped gradient")
    ours.grad = 2 * ours.data
    clip_grad_value([ours], 0.5)
    assert float(ours.grad) == 0.5


# -- clip_grad_norm of a negative order ---------------------------------------------------

@pytest.mark.parametrize("norm_type", [-1.0, -2.0, -0.5])
@pytest.mark.parametrize("grads", [[[0.0, 1.0, 2.0]], [[0.0, 0.0]], [[1.0, -2.0], [0.0, 3.0]], [[1.0, -2.0], [4.0]]])
def test_clip_grad_norm_of_negative_order_with_zero_entries_matches_torch(grads, norm_type):
    _clip_both(grads, norm_type)


@pytest.mark.parametrize("norm_type", [0.5, 3.0, -2.0])
@pytest.mark.parametrize("grads", [[[1e308] * 4], [[1e308, 1.0], [2.0]], [[1e-300, 1e-300]]])
def test_clip_grad_norm_overflowing_its_powers_gives_torchs_inf_or_zero(grads, norm_type):
    _clip_both(grads, norm_type)


def _clip_both(grads, norm_type):
    ours, theirs = [], []
    for g in grads:
        p, t = _pair(np.zeros(len(g)))
        p.grad, t.grad = np.array(g), torch.tensor(g, dtype=torch.float64)
        ours.append(p)
        theirs.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no divide-by-zero warning from 0 ** p either
        total = clip_grad_norm(ours, 0.1, norm_type=norm_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch's own overflow warnings
        expected = torch.nn.utils.clip_grad_norm_(theirs, 0.1, norm_type=norm_type).item()
    assert total == pytest.approx(expected, rel=1e-12, abs=0.0)
    for p, t in zip(ours, theirs):
        assert_close(p.grad, t.grad.numpy(), 1e-12, "clipped gradient")


# -- LambdaSchedule in a ChainedSchedule ----------------------------------------------------

def test_chained_lambda_schedule_contributes_its_factor():
    """torch's LambdaLR sets base_lr f(t) whatever the rate it finds (so torch's ChainedScheduler
    drops the factors before it); lamina's chain multiplies every factor, as documented."""
    def fn(t):
        return 0.9**t

    opt = optim.SGD([lamina.tensor(np.ones(2), requires_grad=True)], lr=1.0)
    chain = schedules.ChainedSchedule([schedules.ConstantFactor(0.1, 0.5, 4), schedules.LambdaSchedule(0.1, fn)],
                                      optimizer=opt)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    alone = torch.optim.lr_scheduler.LambdaLR(topt, fn)
    for t in range(7):
        factor = 0.5 if t < 4 else 1.0
        assert opt.lr == pytest.approx(factor * topt.param_groups[0]["lr"], rel=1e-12)
        assert opt.lr == pytest.approx(0.1 * factor * 0.9**t, rel=1e-12)
        chain.step()
        topt.step()
        alone.step()
    assert "LambdaLR" in schedules.ChainedSchedule.__doc__ and "overwrites" in schedules.ChainedSchedule.__doc__


# -- ReduceOnPlateau resumed after the base rate reached 0 ---------------------------------

def _plateau_pair():
    a, b = (lamina.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1)
    return opt, optim.ReduceOnPlateau(opt, factor=0.0, patience=0, min_lr=[0.0, 0.01])


@pytest.mark.parametrize("optimizer_first", [True, False])
def test_plateau_resumes_after_the_base_lr_reached_zero_with_a_group_at_its_floor(optimizer_first):
    opt, sched = _plateau_pair()
    for metric in (1.0, 2.0, 3.0):
        sched.step(metric)
    assert opt.lr == 0.0 and [g["lr"] for g in opt.param_groups] == [0.0, 0.01]
    o_sd, s_sd = opt.state_dict(), sched.state_dict()
    opt2, sched2 = _plateau_pair()
    if optimizer_first:
        opt2.load_state_dict(o_sd)
        sched2.load_state_dict(s_sd)
    else:
        sched2.load_state_dict(s_sd)
        opt2.load_state_dict(o_sd)
    assert opt2.lr == 0.0 and [g["lr"] for g in opt2.param_groups] == [0.0, 0.01]
    assert (sched2.best, sched2.t, sched2.num_bad_epochs) == (sched.best, sched.t, sched.num_bad_epochs)
    for metric in (4.0, 5.0):
        sched.step(metric)
        sched2.step(metric)
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


# -- a parameter given twice -----------------------------------------------------------------

def test_a_parameter_repeated_within_one_group_is_named_so():
    p = lamina.tensor(np.ones(3), requires_grad=True)
    q = lamina.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"SGD: parameter 2 of parameter group 0 \(shape \(3,\)\) is repeated "
                                         r"within group 0 \(it is also parameter 0\)"):
        optim.SGD([p, q, p], lr=0.1)
    with pytest.raises(ValueError, match=r"SGD: parameter 1 of parameter group 1 \(shape \(2,\)\) is already in "
                                         r"parameter group 0"):
        optim.SGD([{"params": [q]}, {"params": [p, q]}], lr=0.1)
