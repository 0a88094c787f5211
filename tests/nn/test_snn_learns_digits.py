"""A spiking network (64-100-10 leaky neurons, 25 steps, rate-coded pixels) learns scikit-learn's
digits by backpropagation through time with surrogate gradients."""

import time

import numpy as np

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.nn import spikegen

STEPS = 25


def test_rate_coded_spiking_network_learns_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    net = nn.SpikingSequential(nn.Dense(100), nn.Leaky(beta=0.9), nn.Dense(10), nn.Leaky(beta=0.9))
    net(spikegen.rate(xtr[:1], STEPS))
    opt = optim.Adam(net.parameters(), lr=5e-3)
    order = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(8):
        batches = order.permutation(len(xtr)).reshape(-1, 1)[: len(xtr) // 64 * 64].reshape(-1, 64)
        for rows in batches:
            spk_rec, _ = net(spikegen.rate(xtr[rows], STEPS))
            cost = F.ce_rate_loss(spk_rec, ytr[rows])
            opt.zero_grad()
            cost.backward()
            opt.step()
    elapsed = time.perf_counter() - started
    with lamina.no_grad():
        spk_rec, mem_rec = net(spikegen.rate(xte, STEPS))
    accuracy = spikegen.accuracy_rate(spk_rec, yte)
    assert spk_rec.shape == mem_rec.shape == (STEPS, len(xte), 10)
    assert accuracy >= 0.88, f"test accuracy {accuracy:.3f} after {elapsed:.1f} s (chance: 0.1)"
