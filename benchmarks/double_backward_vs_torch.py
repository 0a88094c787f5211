"""Second-order work: lamina's ``grad(..., create_graph=True)`` against PyTorch's.

Two cases run on the same arrays in lamina and in PyTorch (threads = core count), timed back
to back in every round:

* Hessian-vector product of an MLP's cross-entropy (784-256-10, batch 128) with respect to
  its weights: the gradient recorded with create_graph, contracted with a vector, then
  differentiated once more (Pearlmutter's trick);
* a WGAN-GP critic step (784-256-256-1 with LeakyReLU, batch 64): the gradient penalty at
  mixed points plus the Wasserstein gap, back-propagated to the critic's weights;
* the same critic step on a convolutional critic (28x28x1 images, conv 3x3 16 stride 2,
  LeakyReLU, conv 3x3 32 stride 2, LeakyReLU, dense 1; batch 32), if ``--conv``;
* a continuous-flow step: 40 Euler steps of a 2-64-2 tanh field on 256 points, each taking the
  exact trace of df/dz by ``grad(create_graph=True)`` inside the growing graph (as FFJORD does),
  then backward of the log-likelihood to the field's weights. Each ``grad`` runs only the nodes
  between its output and the current z, so the step costs grow linearly with the steps.

Prints each lamina/PyTorch throughput ratio (above 1: lamina is faster) as the median of the
rounds' ratios with its range.

    python benchmarks/double_backward_vs_torch.py [--repeats 9] [--conv]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as TF

import lamina
from lamina import functional as F
from lamina.autograd import grad
from lamina.functional.conv import conv2d
from lamina.nn.dense import linear

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def _mlp_hvp(rng):
    x = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    shapes = [(784, 256), (256,), (256, 10), (10,)]
    weights = [(rng.standard_normal(s) * (0.05 if len(s) == 2 else 0.01)).astype(np.float32) for s in shapes]
    vectors = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    y_t = torch.tensor(y)

    def ours():
        w1, b1, w2, b2 = [lamina.tensor(w, requires_grad=True) for w in weights]
        cost = F.categorical_cross_entropy(linear(F.tanh(linear(x, w1, b1)), w2, b2), y, from_logits=True)
        grads = grad(cost, [w1, b1, w2, b2], create_graph=True)
        inner = sum((g * v).sum() for g, v in zip(grads, vectors))
        grad(inner, [w1, b1, w2, b2])

    def theirs():
        w1, b1, w2, b2 = [torch.tensor(w, requires_grad=True) for w in weights]
        cost = TF.cross_entropy(torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2, y_t)
        grads = torch.autograd.grad(cost, [w1, b1, w2, b2], create_graph=True)
        inner = sum((g * torch.tensor(v)).sum() for g, v in zip(grads, vectors))
        torch.autograd.grad(inner, [w1, b1, w2, b2])

    return "MLP 784-256-10 Hessian-vector product, batch 128", ours, theirs


def _critic_step(name, real, fake, eps, weights, critic_ours, critic_theirs, torch_layout):
    def ours():
        params = [lamina.tensor(w, requires_grad=True) for w in weights]
        gap = critic_ours(lamina.tensor(fake), params).mean() - critic_ours(lamina.tensor(real), params).mean()
        cost = gap + 10 * F.gradient_penalty(lambda t: critic_ours(t, params), real, fake, eps=eps)
        cost.backward()

    real_t, fake_t = torch.tensor(torch_layout(real)), torch.tensor(torch_layout(fake))
    eps_t = torch.tensor(eps.reshape((-1,) + (1,) * (real.ndim - 1)))
    weights_t = [torch.tensor(torch_layout(w) if w.ndim == 4 else w) for w in weights]

    def theirs():
        params = [w.clone().requires_grad_() for w in weights_t]
        mixed = (eps_t * real_t + (1 - eps_t) * fake_t).requires_grad_()
        (slope,) = torch.autograd.grad(critic_theirs(mixed, params).sum(), mixed, create_graph=True)
        penalty = ((slope.flatten(1).norm(dim=1) - 1) ** 2).mean()
        cost = critic_theirs(fake_t, params).mean() - critic_theirs(real_t, params).mean() + 10 * penalty
        cost.backward()

    return name, ours, theirs


def _mlp_critic(rng):
    real = rng.standard_normal((64, 784)).astype(np.float32)
    fake = rng.standard_normal((64, 784)).astype(np.float32)
    eps = rng.uniform(size=64).astype(np.float32)
    shapes = [(784, 256), (256,), (256, 256), (256,), (256, 1), (1,)]
    weights = [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in shapes]

    def critic_ours(x, p):
        h = F.leaky_relu(linear(x, p[0], p[1]), 0.2)
        return linear(F.leaky_relu(linear(h, p[2], p[3]), 0.2), p[4], p[5])

    def critic_theirs(x, p):
        h = TF.leaky_relu(x @ p[0] + p[1], 0.2)
        return TF.leaky_relu(h @ p[2] + p[3], 0.2) @ p[4] + p[5]

    return _critic_step("WGAN-GP critic step, MLP 784-256-256-1, batch 64", real, fake, eps, weights,
                        critic_ours, critic_theirs, lambda a: a)


def _conv_critic(rng):
    real = rng.standard_normal((32, 28, 28, 1)).astype(np.float32)
    fake = rng.standard_normal((32, 28, 28, 1)).astype(np.float32)
    eps = rng.uniform(size=32).astype(np.float32)
    weights = [(rng.standard_normal((16, 3, 3, 1)) * 0.3).astype(np.float32), np.zeros(16, np.float32),
               (rng.standard_normal((32, 3, 3, 16)) * 0.1).astype(np.float32), np.zeros(32, np.float32),
               (rng.standard_normal((7 * 7 * 32, 1)) * 0.02).astype(np.float32), np.zeros(1, np.float32)]

    def critic_ours(x, p):
        h = F.leaky_relu(conv2d(x, p[0], p[1], stride=2, padding=1), 0.2)
        h = F.leaky_relu(conv2d(h, p[2], p[3], stride=2, padding=1), 0.2)
        return linear(h.reshape(h.shape[0], -1), p[4], p[5])

    def critic_theirs(x, p):
        h = TF.leaky_relu(TF.conv2d(x, p[0], p[1], stride=2, padding=1), 0.2)
        h = TF.leaky_relu(TF.conv2d(h, p[2], p[3], stride=2, padding=1), 0.2)
        return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1) @ p[4] + p[5]   # NHWC flattening, as lamina

    return _critic_step("WGAN-GP critic step, conv critic 28x28, batch 32", real, fake, eps, weights,
                        critic_ours, critic_theirs, lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _trace_loop(rng):
    z0 = rng.standard_normal((256, 2)).astype(np.float32)
    shapes = [(2, 64), (64,), (64, 2), (2,)]
    weights = [(rng.standard_normal(s) * 0.3).astype(np.float32) for s in shapes]
    steps, h = 40, 0.025
    basis = [np.eye(2, dtype=np.float32)[k].reshape(1, 2).repeat(256, 0) for k in range(2)]

    def ours():
        w1, b1, w2, b2 = [lamina.tensor(w, requires_grad=True) for w in weights]
        z, log_det = lamina.tensor(z0), 0.0
        for _ in range(steps):
            z = z if z.requires_grad else lamina.tensor(z.data, requires_grad=True)
            f = linear(F.tanh(linear(z, w1, b1)), w2, b2)
            trace = sum((grad((f * e).sum(), [z], create_graph=True)[0] * e).sum(axis=1) for e in basis)
            z, log_det = z + h * f, log_det + h * trace
        (0.5 * (z * z).sum(axis=1) + log_det).mean().backward()

    basis_t = [torch.tensor(e) for e in basis]

    def theirs():
        w1, b1, w2, b2 = [torch.tensor(w, requires_grad=True) for w in weights]
        z, log_det = torch.tensor(z0, requires_grad=True), 0.0
        for _ in range(steps):
            f = torch.tanh(z @ w1 + b1) @ w2 + b2
            trace = sum((torch.autograd.grad((f * e).sum(), z, create_graph=True)[0] * e).sum(1) for e in basis_t)
            z, log_det = z + h * f, log_det + h * trace
        (0.5 * (z * z).sum(1) + log_det).mean().backward()

    return "FFJORD-style trace in a 40-step loop, 2-64-2 field, 256 points", ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--conv", action="store_true", help="also the convolutional critic")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"threads: torch {torch.get_num_threads()}; rounds {args.repeats}, median of the rounds' ratios\n")
    cases = [_mlp_hvp, _mlp_critic, _trace_loop] + ([_conv_critic] if args.conv else [])
    for make in cases:
        compare_rounds(*make(np.random.default_rng(0)), args.repeats)


if __name__ == "__main__":
    main()
