"""What the tabular model tests share: torch references of sparsemax and 1.5-entmax, a
module's forward and parameter gradients against a torch re-implementation fed the same
weights, and a quick mini-batch training loop."""

from __future__ import annotations

import numpy as np
import torch

import lamina
from helpers import assert_close


def torch_parameters(module) -> dict:
    """Every parameter of the lamina ``module`` as a float64 torch leaf requiring grad, by name."""
    return {name: torch.tensor(np.asarray(p.data, dtype=np.float64), requires_grad=True)
            for name, p in module.named_parameters()}


def compare_module(module, lamina_fn, torch_fn, inputs: list, rtol: float = 1e-10, seed: int = 0) -> dict:
    """Run ``lamina_fn(*inputs)`` and ``torch_fn(params, *inputs)`` (float inputs as tensors
    requiring grad, integer ones as they are), back-propagate one random upstream gradient
    through both and compare the outputs, the input gradients and every parameter's gradient.
    Returns the torch parameters (after backward)."""
    params = torch_parameters(module)
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) if a.dtype.kind == "f" else a for a in inputs]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") if a.dtype.kind == "f" else torch.tensor(a)
              for a in inputs]
    out_l, out_t = lamina_fn(*ours), torch_fn(params, *theirs)
    assert_close(out_l.numpy(), out_t.detach().numpy(), rtol, "output")
    up = np.random.default_rng(seed).standard_normal(out_t.shape)
    module.zero_grad()
    (out_l * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (out_t * torch.tensor(up)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if b.requires_grad:
            assert_close(a.grad, b.grad.numpy(), rtol, f"gradient of input {k}")
    for name, p in module.named_parameters():
        expected = params[name].grad
        expected = np.zeros(p.shape) if expected is None else expected.numpy()
        actual = np.zeros(p.shape) if p.grad is None else p.grad
        if np.abs(expected).max() < 1e-12:          # a gradient that is zero in exact arithmetic
            assert np.abs(actual).max() < 1e-12, f"gradient of {name}: {actual} where torch has zero"
        else:
            assert_close(actual, expected, rtol, f"gradient of {name}")
    return params


def standardized_split(x: np.ndarray, y: np.ndarray, seed: int = 0, test_fraction: float = 0.3):
    """(x_train, y_train, x_test, y_test), the features standardised with the training statistics."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def train_classifier(model, x, y, epochs: int, lr: float, batch_size: int = 128, loss_extra=None, seed: int = 0):
    """Adam on cross-entropy over shuffled mini-batches; ``loss_extra(model, x_batch)`` returns
    (logits, extra loss) when given (TabNet's sparsity term)."""
    optimizer = lamina.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size // 2, batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            if loss_extra is None:
                logits, extra = model(x[rows]), None
            else:
                logits, extra = loss_extra(model, x[rows])
            loss = lamina.functional.cross_entropy(logits, y[rows])
            (loss if extra is None else loss + extra).backward()
            optimizer.step()
    model.eval()


def accuracy(model, x, y) -> float:
    with lamina.no_grad():
        return float((model(x).numpy().argmax(axis=1) == y).mean())


def torch_sparsemax(z, dim: int = -1):
    """Martins & Astudillo 2016, Algorithm 1: sort, find the support size k, tau = (sum_k - 1) / k."""
    ordered, _ = torch.sort(z, dim=dim, descending=True)
    cumulative = ordered.cumsum(dim)
    shape = [1] * z.dim()
    shape[dim] = z.shape[dim]
    k = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype).reshape(shape)
    support = (1 + k * ordered > cumulative).sum(dim=dim, keepdim=True)
    tau = (cumulative.gather(dim, support - 1) - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def torch_entmax15(z, dim: int = -1):
    """Peters et al. 2019: on the halved scores, tau_k = mean_k - sqrt((1 - k var_k) / k)."""
    half = (z - z.max(dim=dim, keepdim=True).values) / 2
    ordered, _ = torch.sort(half, dim=dim, descending=True)
    shape = [1] * z.dim()
    shape[dim] = z.shape[dim]
    k = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype).reshape(shape)
    mean = ordered.cumsum(dim) / k
    mean_square = (ordered ** 2).cumsum(dim) / k
    delta = torch.clamp((1 - k * (mean_square - mean ** 2)) / k, min=0)
    tau = mean - torch.sqrt(delta)
    support = (tau <= ordered).sum(dim=dim, keepdim=True)
    return torch.clamp(half - tau.gather(dim, support - 1), min=0) ** 2
