"""ODEBlock: the final state of odeint, its function evaluations counted, the adjoint's
gradients; neural ODEs learn the classic spiral and the digits."""

import time

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import lamina
from helpers import randn
from lamina import functional as F
from lamina import nn, optim
from lamina.autograd import grad
from lamina.data import ArrayDataset, DataLoader, load_digits, train_val_test_split


class Field(nn.Module):
    """f(t, h) = W2 tanh(W1 g(h) + b1) + b2, g the identity or, for the spiral, h^3."""

    def __init__(self, width: int, units: int, cube: bool = False):
        super().__init__()
        self.hidden = nn.Dense(width, activation="tanh")
        self.out = nn.Dense(units)
        self.cube = cube

    def forward(self, t, h):
        return self.out(self.hidden(h ** 3 if self.cube else h))


def test_block_returns_the_final_state_and_counts_evaluations():
    lamina.manual_seed(0)
    block = nn.ODEBlock(Field(8, 3), t=(0.0, 1.0), method="rk4", options={"step_size": 0.25})
    x = lamina.tensor(randn(4, 3), requires_grad=True)
    out = block(x)
    expected = lamina.odeint(block.func, x, [0.0, 1.0], method="rk4", options={"step_size": 0.25})[-1]
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    assert (block.nfe_forward, block.nfe_backward) == (16, 0)
    out.sum().backward()
    assert block.nfe_backward == 0 and all(p.grad is not None for p in block.parameters())


def test_adjoint_block_counts_backward_evaluations_and_matches_gradients():
    lamina.manual_seed(0)
    direct = nn.ODEBlock(Field(8, 3), rtol=1e-10, atol=1e-12)
    adjoint = nn.ODEBlock(direct.func, rtol=1e-10, atol=1e-12, adjoint=True)
    direct.build((4, 3))
    direct.double()
    x = lamina.tensor(randn(4, 3), dtype=np.float64, requires_grad=True)
    weights = lamina.tensor(randn(4, 3, seed=1), dtype=np.float64)
    found = [grad((block(x) * weights).sum(), [x, *direct.parameters()]) for block in (direct, adjoint)]
    for ours, reference in zip(found[1], found[0]):
        np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9 * np.abs(reference).max())
    assert direct.nfe_backward == 0 and adjoint.nfe_backward > 0 and adjoint.nfe_forward == direct.nfe_forward
    assert adjoint.nfe == adjoint.nfe_forward + adjoint.nfe_backward
    adjoint(x)                                 # a new forward pass starts the counts again
    assert adjoint.nfe_backward == 0


def test_block_checks_its_arguments():
    with pytest.raises(TypeError, match="ODEBlock: func must be a Module"):
        nn.ODEBlock(lambda t, h: h)
    with pytest.raises(ValueError, match="ODEBlock: t must be two different times"):
        nn.ODEBlock(Field(4, 2), t=(1.0, 1.0))
    with pytest.raises(ValueError, match="ODEBlock: unknown method 'rk45'"):
        nn.ODEBlock(Field(4, 2), method="rk45")
    with pytest.raises(ValueError, match=r"ODEBlock: unknown adjoint_options \['adjoint_step'\]"):
        nn.ODEBlock(Field(4, 2), adjoint=True, adjoint_options={"adjoint_step": 0.1})
    block = nn.ODEBlock(Field(4, 3))                 # the field maps to 3 features, the input has 2
    with pytest.raises(lamina.ShapeError, match=r"ODEBlock: func\(t, y\) returned a tensor of shape \(5, 3\)"):
        block(lamina.tensor(randn(5, 2)))


def test_the_spiral_is_learned():
    """torchdiffeq's demo: y' = y^3 A from y(0) = (2, 0), fitted by f(y) = MLP(y^3) on
    segments of 8 of 100 samples of [0, 10]; the mean absolute error over all segments falls."""
    spiral = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    times = np.linspace(0.0, 10.0, 100)
    true = solve_ivp(lambda t, y: (y ** 3) @ spiral, (0.0, 10.0), [2.0, 0.0], t_eval=times, rtol=1e-10,
                     atol=1e-10).y.T.astype(np.float32)
    lamina.manual_seed(0)
    field = Field(50, 2, cube=True)
    field(lamina.tensor(0.0), lamina.tensor(true[:1]))
    opt = optim.Adam(field.parameters(), lr=1e-2)
    every_start, length, rng = np.arange(len(times) - 8), 8, np.random.default_rng(0)

    def segment_error(starts):
        predicted = lamina.odeint(field, lamina.tensor(true[starts]), times[:length], method="rk4")
        target = np.stack([true[starts + i] for i in range(length)])
        return (predicted - lamina.tensor(target)).abs().mean()

    with lamina.no_grad():
        before = float(segment_error(every_start).data)
    started = time.perf_counter()
    for _ in range(200):
        cost = segment_error(rng.choice(every_start, 16, replace=False))
        opt.zero_grad()
        cost.backward()
        opt.step()
    with lamina.no_grad():
        after = float(segment_error(every_start).data)
    assert after < before / 4 and after < 0.1, (before, after, time.perf_counter() - started)


@pytest.mark.parametrize("adjoint", [False, True], ids=["through the solver", "adjoint"])
def test_an_ode_net_classifies_digits(adjoint):
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    block = nn.ODEBlock(Field(32, 32), method="dopri5", rtol=1e-3, atol=1e-4, adjoint=adjoint)
    model = nn.Sequential([nn.Dense(32, activation="tanh"), block, nn.Dense(10)])
    model.build((None, 64))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for xb, yb in DataLoader(ArrayDataset(xtr, ytr), batch_size=64, seed=0):
            cost = F.categorical_cross_entropy(model(lamina.tensor(xb)), yb, from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    assert block.nfe_forward > 0 and (block.nfe_backward > 0) == adjoint
    assert all(p.grad is not None and np.abs(p.grad).max() > 0 for p in block.parameters())
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(xte)).numpy().argmax(axis=1) == yte).mean())
    assert accuracy >= 0.9, accuracy
