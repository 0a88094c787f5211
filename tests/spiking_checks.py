"""PyTorch versions of the spike functions and the neurons, written the way snnTorch writes
them, for the tests of lamina.functional.surrogates and lamina.nn.spiking to compare against."""

from __future__ import annotations

import math

import torch

# the surrogate derivative g(u) of each spike function, on torch tensors
DERIVATIVES = {
    "fast_sigmoid": lambda u, slope=25.0: 1.0 / (slope * u.abs() + 1.0) ** 2,
    "atan": lambda u, alpha=2.0: (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2),
    "sigmoid": lambda u, slope=25.0: slope * torch.sigmoid(slope * u) * (1 - torch.sigmoid(slope * u)),
    "straight_through": lambda u: torch.ones_like(u),
    "triangular": lambda u, width=1.0: torch.clamp(1 - u.abs() / width, min=0) / width,
}


class TorchSpike(torch.autograd.Function):
    """Heaviside forward, ``derivative(u)`` times the upstream gradient backward."""

    @staticmethod
    def forward(ctx, u, derivative):
        ctx.save_for_backward(u)
        ctx.derivative = derivative
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, dy):
        (u,) = ctx.saved_tensors
        return dy * ctx.derivative(u), None


def torch_spike(name: str, **options):
    """The spike function ``u -> H(u)`` with the surrogate ``name`` and its options."""
    return lambda u: TorchSpike.apply(u, lambda v: DERIVATIVES[name](v, **options))


def torch_leaky(currents, beta, threshold, spike, reset="subtract", clamp_beta=False, detach=True,
                alpha=None, recurrent=None):
    """A first-order LIF neuron run over ``currents`` (T, batch, n) from zeros, as snnTorch
    steps it (with ``alpha``, the second-order Synaptic neuron; with ``recurrent``, a function
    of the previous spikes added to the input, RLeaky): returns the spike and potential records."""
    mem = torch.zeros_like(currents[0])
    syn = torch.zeros_like(currents[0])
    spk = torch.zeros_like(currents[0])
    b = beta.clamp(0, 1) if clamp_beta else beta
    spikes, potentials = [], []
    for x in currents:
        r = spike(mem - threshold)
        if detach:
            r = r.detach()
        if recurrent is not None:
            x = x + recurrent(spk)
        if alpha is not None:
            syn = alpha * syn + x
            x = syn
        if reset == "zero":
            mem = b * (1 - r) * mem + x
        elif reset == "subtract":
            mem = b * mem + x - r * threshold
        else:
            mem = b * mem + x
        spk = spike(mem - threshold)
        spikes.append(spk)
        potentials.append(mem)
    return torch.stack(spikes), torch.stack(potentials)
