"""Checks shared by the tests of the timm-named zoo models (MLP-Mixer, ResMLP, ConvMixer,
DeiT): a lamina module against a torch reference given the same weights (loaded with
load_timm_state_dict), outputs and every gradient in float64."""

from __future__ import annotations

import numpy as np
import torch
import torch_zoo

import lamina
from helpers import assert_close, randn
from lamina.models import load_timm_state_dict


def torch_layout(grad: np.ndarray, lamina_shape) -> np.ndarray:
    """A torch parameter gradient in lamina's layout: conv (K, c, f, f) -> (K, f, f, c), Linear transposed."""
    if grad.ndim == 4:
        return grad.transpose(0, 2, 3, 1)
    if grad.ndim == 2:
        return grad.T
    return grad.reshape(lamina_shape)


def compare_with_reference(module, tmodule, x: np.ndarray, images: bool, seed: int = 0, rtol: float = 1e-9,
                           training: bool = False):
    """Outputs, the input gradient and every parameter gradient of ``module`` against
    ``tmodule`` in float64, weights random and shared. ``images``: ``x`` is an NHWC batch
    (NCHW for torch); else tokens (N, T, D) for both. Outputs that are images are compared in
    NHWC. Returns the lamina output."""
    lamina.set_default_dtype(np.float64)
    tmodule = torch_zoo.randomize(tmodule.double(), seed=seed)
    module.build((None, *x.shape[1:]))
    load_timm_state_dict(module, tmodule.state_dict())
    module.train(training)
    tmodule.train(training)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy() if images else x, requires_grad=True)
    out_l, out_t = module(xl), tmodule(xt)
    outs_l, outs_t = (list(out_l), list(out_t)) if isinstance(out_l, tuple) else ([out_l], [out_t])
    total_l, total_t = 0.0, 0.0
    for k, (a, b) in enumerate(zip(outs_l, outs_t, strict=True)):
        b = b.permute(0, 2, 3, 1) if b.ndim == 4 else b
        assert_close(a.numpy(), b.detach().numpy(), 1e-10, f"output {k}")
        upstream = randn(*a.shape, seed=seed + 1 + k)
        total_l = lamina.functional.add(total_l, lamina.functional.sum(lamina.functional.mul(a, upstream)))
        total_t = total_t + (b * torch.from_numpy(upstream)).sum()
    total_l.backward()
    total_t.backward()
    grad_t = xt.grad.numpy()
    assert_close(xl.grad, grad_t.transpose(0, 2, 3, 1) if images else grad_t, rtol, "input gradient")
    theirs = dict(tmodule.named_parameters())
    assert {name for name, _ in module.named_parameters()} == set(theirs)
    # some gradients are exactly zero (a bias added evenly across the features a LayerNorm then
    # normalises): compared against the largest parameter gradient instead of their own scale
    largest = max(float(np.abs(p.grad.numpy()).max()) for p in tmodule.parameters())
    for name, p in module.named_parameters():
        expected = torch_layout(theirs[name].grad.numpy(), p.shape)
        np.testing.assert_allclose(p.grad, expected, rtol=rtol, atol=rtol * largest, err_msg=f"gradient of {name}")
    return out_l
