"""Helpers for the layer tests: gradcheck a layer w.r.t. its input and parameters, and
compare a lamina layer with its PyTorch counterpart (outputs, input and parameter
gradients), converting NHWC <-> NCHW at the boundary."""

from __future__ import annotations

import numpy as np
import torch

import lamina
from helpers import assert_close


def gradcheck_layer(layer, x, *, grad_input: bool = True, reseed: int | None = None, **tolerances) -> bool:
    """Gradcheck ``layer`` in float64 w.r.t. its input and every trainable parameter.

    ``reseed``: seed lamina before every evaluation (layers that draw random numbers).
    """
    assert lamina.get_default_dtype() == np.float64, "set the default dtype to float64 before building"
    # a copy: gradcheck perturbs the array in place through a flat view
    xt = lamina.tensor(np.array(x, dtype=np.float64), requires_grad=grad_input, dtype=np.float64)
    if not layer.built:
        layer(xt)
    params = layer.parameters(trainable_only=True)

    def run(x_, *_):
        if reseed is not None:
            lamina.manual_seed(reseed)
        return layer(x_)

    return lamina.gradcheck(run, xt, *params, **tolerances)


def _to_nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def _to_nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def compare_layer(layer, torch_module, x, pairs=(), *, nchw: bool = True, rtol: float = 1e-9,
                  seed: int = 0, copy: bool = True):
    """Run ``layer`` and ``torch_module`` on ``x`` (float64) and compare everything.

    ``pairs``: (lamina Parameter name, torch parameter, perm) with ``perm`` the axes
    permutation taking the lamina array to the torch layout (None: same layout). The lamina
    weights are copied into torch first unless ``copy`` is False. A 4-D ``x`` (NHWC) is
    given to torch as NCHW when ``nchw``. Returns (lamina output, torch output as NHWC).
    """
    x = np.asarray(x, dtype=np.float64)
    torch_module.double()
    if not layer.built:
        layer.build(x.shape)
        layer.built = True
    params = dict(layer.named_parameters())
    for name, tparam, perm in pairs:
        value = params[name].numpy()
        if perm is not None:
            value = value.transpose(perm)
        if copy:
            with torch.no_grad():
                tparam.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out_l = layer(xl)
    xt = torch.tensor(_to_nchw(x) if nchw else x, requires_grad=True)
    out_t = torch_module(xt)
    out_t_np = out_t.detach().numpy()
    out_t_np = _to_nhwc(out_t_np) if nchw else out_t_np
    assert_close(out_l.numpy(), out_t_np, rtol, "output")

    upstream = np.random.default_rng(seed).standard_normal(out_l.shape)
    out_l.backward(upstream)
    up_t = torch.from_numpy(np.ascontiguousarray(_to_nchw(upstream) if nchw else upstream))
    (out_t * up_t).sum().backward()
    gx = xt.grad.numpy()
    assert_close(xl.grad, _to_nhwc(gx) if nchw else gx, rtol, "input gradient")
    for name, tparam, perm in pairs:
        expected = tparam.grad.numpy()
        if perm is not None:
            expected = expected.transpose(np.argsort(perm))
        actual = params[name].grad
        assert actual is not None, f"no gradient reached {name}"
        assert_close(actual, expected, rtol, f"gradient of {name}")
    return out_l, out_t_np


def loaded_from_torch(ours, ref, shapes):
    """``ours`` (a Transformer layer or stack) built for ``shapes`` and holding ``ref``'s weights,
    in evaluation mode; checks that the converted names match ours one to one."""
    from lamina.nn.transformer_decoder import from_torch_state_dict

    ours.build(shapes)
    ours.built = True
    converted = from_torch_state_dict(ref.state_dict())
    assert sorted(converted) == sorted(ours.state_dict())
    ours.load_state_dict(converted)
    return ours.eval()
