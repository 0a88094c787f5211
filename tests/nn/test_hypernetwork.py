import numpy as np
import pytest

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.hypernetwork import HyperNetwork


def _target(n_in=2, units=3):
    lamina.set_default_dtype(np.float64)
    layer = nn.Dense(units)
    layer(randn(1, n_in))
    return layer


def test_output_equals_the_target_run_with_the_generated_weights():
    target = nn.Sequential(nn.Dense(5, activation="tanh"), nn.Dense(2))
    lamina.set_default_dtype(np.float64)
    target(randn(1, 3))
    hyper = HyperNetwork(target, embedding_dim=4, chunk_size=7, hidden=6)
    x = randn(4, 3, seed=1)
    generated = hyper.generate()
    w1, b1, w2, b2 = (generated[name].numpy() for name in hyper.target_names)
    by_hand = np.tanh(x @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(hyper(x).numpy(), by_hand, rtol=1e-12)
    counts = hyper.parameter_counts()
    assert counts["target"] == 3 * 5 + 5 + 5 * 2 + 2
    assert counts["generated_per_call"] == 7 * hyper.num_chunks >= counts["target"]
    assert counts["hypernetwork"] == hyper.num_chunks * 4 + 4 * 6 + 6 + 6 * 7 + 7
    hyper.eval()
    assert not target.training and not target[0].training


def test_gradients_reach_only_the_hypernetwork():
    target = _target()
    hyper = HyperNetwork(target, chunk_size=4, num_tasks=2, task_dim=3)
    hyper(randn(5, 2), task=1).sum().backward()
    assert target.weight.grad is None and target.bias.grad is None
    for name, p in hyper.named_parameters():
        assert p.grad is not None, name
    assert np.abs(hyper.task_embeddings.grad[1]).sum() > 0 and np.all(hyper.task_embeddings.grad[0] == 0)


def _torch_hyper(x, embeddings, w, b):
    flat = (embeddings @ w + b).reshape(-1)
    return x @ flat[:6].reshape(2, 3) + flat[6:9]


def test_static_matches_a_torch_rewrite():
    hyper = HyperNetwork(_target(), embedding_dim=3, chunk_size=4)
    assert hyper.num_chunks == 3
    names = ["chunk_embeddings", "generator_weight0", "generator_bias0"]

    def ours(x, *p):
        return nn.functional_call(hyper, dict(zip(names, p)), x)

    arrays = (randn(5, 2), randn(3, 3, seed=1), randn(3, 4, seed=2), randn(4, seed=3))
    compare_with_torch(ours, _torch_hyper, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_conditional_hypernetwork_learns_two_tasks():
    """Two linear regression tasks with opposite maps; one generator must serve both."""
    lamina.manual_seed(0)
    target = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(1))
    target(randn(1, 2))
    hyper = HyperNetwork(target, embedding_dim=4, chunk_size=8, hidden=16, num_tasks=2, task_dim=4)
    x = randn(64, 2, seed=4)
    maps = [np.array([[1.0], [-2.0]]), np.array([[-1.5], [0.5]])]
    ys = [np.sin(x @ m) for m in maps]
    optimizer = lamina.optim.Adam(hyper.parameters(), lr=0.01)

    def losses():
        return [lamina.functional.mse_loss(hyper(x, task=t), lamina.tensor(ys[t])) for t in range(2)]

    start = [float(loss.item()) for loss in losses()]
    for _ in range(300):
        optimizer.zero_grad()
        first, second = losses()
        (first + second).backward()
        optimizer.step()
    end = [float(loss.item()) for loss in losses()]
    crossed = float(lamina.functional.mse_loss(hyper(x, task=0), lamina.tensor(ys[1])).item())
    print(f"task losses {start} -> {end}; task-0 weights on task 1: {crossed:.3f}")
    assert max(end) < 0.05 * min(start) and crossed > 10 * max(end)


def test_errors():
    target = _target()
    with pytest.raises(ValueError, match="target must be a built Module"):
        HyperNetwork(nn.Dense(3))
    with pytest.raises(ValueError, match="not both"):
        HyperNetwork(target, num_tasks=2, condition_dim=3)
    with pytest.raises(ValueError, match=r"task must be an int id in \[0, 2\)"):
        HyperNetwork(target, num_tasks=2)(randn(1, 2), task=2)
    with pytest.raises(ShapeError, match=r"task vector must have shape \(3,\)"):
        HyperNetwork(target, condition_dim=3)(randn(1, 2), task=randn(4))
    with pytest.raises(ValueError, match="static; it takes no task"):
        HyperNetwork(target)(randn(1, 2), task=0)
    with pytest.raises(ValueError, match="conditional; pass task="):
        HyperNetwork(target, condition_dim=3)(randn(1, 2))
