"""One helper to run the same computation in lamina and in PyTorch and compare.

``compare_with_torch(lamina_fn, torch_fn, *arrays)`` builds lamina tensors and torch
tensors from the same arrays, runs both functions, compares the outputs, back-propagates
the same random upstream gradient through both and compares every input's gradient.
Tolerances are relative to the scale of the reference: |a - b| <= rtol * (|b| + max|b|).
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import torch

import lamina

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def assert_close(actual, expected, rtol: float, what: str = "values") -> None:
    """|a - b| <= rtol (|b| + max|b|) over the finite values; NaN and +-inf must stand at the
    same places in both (a NaN on one side only, or an inf against a finite value, fails)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    finite = np.isfinite(expected)
    special = (np.isnan(actual) != np.isnan(expected)) | (~finite & ~np.isnan(expected) & (actual != expected))
    special |= finite & ~np.isfinite(actual)
    if special.any():
        i = tuple(int(j) for j in np.argwhere(special)[0])
        raise AssertionError(f"{what}: lamina {actual[i]!r} vs torch {expected[i]!r} at {i} (non-finite on one side)")
    scale = np.abs(expected[finite]).max() if finite.any() else 0.0
    with np.errstate(invalid="ignore"):                   # inf - inf where both are inf, masked out
        err = np.where(finite, np.abs(actual - expected) - rtol * (np.abs(expected) + scale), 0.0)
    if err.size and err.max() > 0:
        i = np.unravel_index(int(err.argmax()), err.shape)
        raise AssertionError(
            f"{what}: lamina {actual[i]!r} vs torch {expected[i]!r} at {i} (rtol={rtol})"
        )


def _as_list(x):
    return list(x) if isinstance(x, (tuple, list)) else [x]


def compare_with_torch(lamina_fn, torch_fn, *arrays, dtype=np.float32, rtol: float | None = None,
                       grad: bool | list[bool] = True, seed: int = 0):
    """Run ``lamina_fn`` and ``torch_fn`` on the same inputs; compare outputs and gradients.

    ``grad`` is a bool for every input or one bool per input (integer arrays never get
    one). Returns the lamina outputs (a list).
    """
    rtol = TOLERANCE[np.dtype(dtype).type] if rtol is None else rtol
    wants = grad if isinstance(grad, (list, tuple)) else [grad] * len(arrays)
    cast = [a.astype(dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in arrays]
    wants = [w and a.dtype.kind == "f" for w, a in zip(wants, cast)]
    ours = [lamina.tensor(a, requires_grad=w, dtype=a.dtype) for a, w in zip(cast, wants)]
    theirs = [torch.tensor(a, requires_grad=w) for a, w in zip(cast, wants)]
    out_l = _as_list(lamina_fn(*ours))
    out_t = _as_list(torch_fn(*theirs))
    assert len(out_l) == len(out_t)
    for k, (a, b) in enumerate(zip(out_l, out_t)):
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"output {k}")
    if not any(wants):
        return out_l
    rng = np.random.default_rng(seed)
    total_l, total_t = None, None
    for a, b in zip(out_l, out_t):
        if not b.requires_grad:
            continue
        up = rng.standard_normal(b.shape).astype(dtype)
        term_l = (a * lamina.tensor(up, dtype=dtype)).sum()
        term_t = (b * torch.tensor(up)).sum()
        total_l = term_l if total_l is None else total_l + term_l
        total_t = term_t if total_t is None else total_t + term_t
    total_l.backward()
    total_t.backward()
    for k, (a, b, w) in enumerate(zip(ours, theirs, wants)):
        if not w:
            continue
        expected = b.grad.numpy() if b.grad is not None else np.zeros(b.shape)
        actual = a.grad if a.grad is not None else np.zeros(a.shape)
        assert_close(actual, expected, rtol, f"gradient of input {k}")
    return out_l


def compare_double_backward_with_torch(lamina_fn, torch_fn, *arrays, rtol: float = 1e-9,
                                       grad: bool | list[bool] = True, seed: int = 0) -> None:
    """Second derivatives against PyTorch, in float64: the gradients g_i of J = sum(f(x) * r)
    taken with ``create_graph=True`` are compared, then the gradients of sum_i <g_i, v_i>
    (Hessian-vector products), for the same random r and v_i in both."""
    wants = grad if isinstance(grad, (list, tuple)) else [grad] * len(arrays)
    cast = [np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in arrays]
    wants = [w and a.dtype.kind == "f" for w, a in zip(wants, cast)]
    ours = [lamina.tensor(a, requires_grad=w, dtype=a.dtype) for a, w in zip(cast, wants)]
    theirs = [torch.tensor(a, requires_grad=w) for a, w in zip(cast, wants)]
    out_l, out_t = lamina_fn(*ours), torch_fn(*theirs)
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(out_t.shape)
    leaves_l = [t for t, w in zip(ours, wants) if w]
    leaves_t = [t for t, w in zip(theirs, wants) if w]
    g_l = lamina.autograd.grad(out_l, leaves_l, grad_output=r, create_graph=True, allow_unused=True)
    g_t = torch.autograd.grad(out_t, leaves_t, grad_outputs=torch.tensor(r), create_graph=True, allow_unused=True)
    total_l, total_t = None, None
    for k, (a, b) in enumerate(zip(g_l, g_t)):
        assert (a is None) == (b is None), f"gradient {k}: lamina {'None' if a is None else 'a tensor'}, torch {b}"
        if a is None:
            continue
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"gradient of input {k}")
        v = rng.standard_normal(b.shape)
        term_l, term_t = (a * lamina.tensor(v, dtype=np.float64)).sum(), (b * torch.tensor(v)).sum()
        total_l = term_l if total_l is None else total_l + term_l
        total_t = term_t if total_t is None else total_t + term_t
    # gradients that are constants (relu's) have no graph: every second derivative is 0
    h_l = lamina.autograd.grad(total_l, leaves_l, allow_unused=True) if total_l.requires_grad else [None] * len(g_l)
    h_t = torch.autograd.grad(total_t, leaves_t, allow_unused=True) if total_t.requires_grad else [None] * len(g_t)
    for k, (a, b) in enumerate(zip(h_l, h_t)):
        expected = np.zeros(leaves_t[k].shape) if b is None else b.numpy()
        actual = np.zeros(leaves_l[k].shape) if a is None else a
        assert_close(actual, expected, rtol, f"second derivative (Hessian-vector product) of input {k}")


def compare_scalar_with_torch(ours, theirs, values, dtype, grad_rtol: float = 1e-6, grad_atol: float = 1e-7) -> None:
    """``ours`` on 0-d lamina tensors of ``dtype`` against ``theirs`` on float64 torch scalars,
    at each of ``values``: a 0-d result of that dtype, the value and the gradient."""
    for value in values:
        z = lamina.tensor(np.array(value), dtype=dtype, requires_grad=True)
        a = ours(z)
        a.backward()
        tz = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        ta = theirs(tz)
        ta.backward()
        assert a.shape == () and a.dtype == dtype, (value, a.shape, a.dtype)
        np.testing.assert_allclose(a.numpy(), ta.item(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(z.grad, tz.grad.item(), rtol=grad_rtol, atol=grad_atol)


def _float64_inputs(arrays, grad) -> list:
    """Tensors of float64 copies of ``arrays`` (requiring grad as ``grad`` says); integer
    arrays stay constant."""
    wants = grad if isinstance(grad, (list, tuple)) else [grad] * len(arrays)
    inputs = []
    for a, w in zip(arrays, wants):
        a = np.asarray(a)
        if a.dtype.kind == "f":
            inputs.append(lamina.tensor(a.astype(np.float64), requires_grad=w, dtype=np.float64))
        else:
            inputs.append(lamina.tensor(a))
    return inputs


def check_second_derivatives(fn, *arrays, grad: bool | list[bool] = True, **tolerances) -> bool:
    """``lamina.autograd.gradgradcheck`` on float64 copies of ``arrays``."""
    return lamina.autograd.gradgradcheck(fn, *_float64_inputs(arrays, grad), **tolerances)


def check_gradients(fn, *arrays, grad: bool | list[bool] = True, **tolerances) -> bool:
    """``lamina.gradcheck`` on float64 copies of ``arrays`` (integer arrays stay constant)."""
    return lamina.gradcheck(fn, *_float64_inputs(arrays, grad), **tolerances)


# -- random inputs ------------------------------------------------------------------------
def randn(*shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Standard normal values (times ``scale``), float64."""
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale)


def nonzero(*shape, seed: int = 0, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """Values with |x| in [low, high] and random signs: safe denominators, away from kinks at 0."""
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape))


def positive(*shape, seed: int = 0, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """Values in [low, high]: safe arguments for log and sqrt."""
    return np.asarray(np.random.default_rng(seed).uniform(low, high, shape))


def op_table_tests(cases: dict):
    """The two tests of a table ``{name: (lamina_fn, torch_fn, inputs)}``: outputs and
    gradients against PyTorch in float32 and float64, and a float64 gradient check.
    Use as ``test_matches_torch, test_gradcheck = op_table_tests(CASES)``."""
    import pytest

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("name", list(cases))
    def test_matches_torch(name, dtype):
        ours, theirs, inputs = cases[name]
        compare_with_torch(ours, theirs, *inputs, dtype=dtype)

    @pytest.mark.parametrize("name", list(cases))
    def test_gradcheck(name):
        ours, _, inputs = cases[name]
        assert check_gradients(ours, *inputs)

    return test_matches_torch, test_gradcheck


class DeviceArray:
    """Stands for a CuPy array: NumPy may not convert it implicitly; ``get()`` copies it."""

    def __init__(self, values):
        self.values = values

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion to a NumPy array is not allowed")

    def get(self):
        return self.values

    def __len__(self):
        return len(self.values)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_example(title: str) -> str:
    """The first ```python block of the README section whose ``### `` heading starts with ``title``
    (searched up to the next heading)."""
    text = README.read_text()
    start = re.search(rf"^### {re.escape(title)}", text, re.M)
    if start is None:
        raise LookupError(f"README.md has no section whose heading starts with '### {title}'")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start.end())
    section = text[start.start():end.start() if end else len(text)]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    if block is None:
        raise LookupError(f"README.md section '### {title}' has no ```python block")
    return block.group(1)


def run_readme_section(title: str, replace: dict[str, str] | None = None) -> tuple[str, dict]:
    """Run the README section's first python block (see ``readme_example``) with stdout captured.

    ``replace`` maps strings of the code to what to run instead (each must occur). Returns what
    the code printed and its namespace.
    """
    code = readme_example(title)
    for old, new in (replace or {}).items():
        if old not in code:
            raise LookupError(f"README.md section '### {title}': '{old}' is not in its example")
        code = code.replace(old, new)
    printed, names = io.StringIO(), {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), names)
    return printed.getvalue(), names


def watch_call_lengths(model) -> list[int]:
    """The list that collects the length (axis 1) of every input ``model`` is called on."""
    seen = []
    original = model.forward

    def watch(ids):
        seen.append(ids.shape[1])
        return original(ids)

    model.forward = watch
    return seen


class FixedBigram(lamina.nn.Module):
    """A language model whose scores of the next token come from the current one alone, read
    from a fixed (V, V) table: ids (N, T) -> scores (N, T, V)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, ids):
        return lamina.tensor(self.table[ids.numpy()])


def train_classifier(model, x, labels, batches, optimizer) -> None:
    """The learning tests' loop: one ``optimizer`` step on the cross-entropy of
    ``model(x[rows])`` against ``labels[rows]`` for each index array ``rows`` of ``batches``."""
    import lamina

    for rows in batches:
        loss = lamina.functional.cross_entropy(model(lamina.tensor(x[rows])), labels[rows])
        optimizer.zero_grad()                # after the first call, which builds a lazy model
        loss.backward()
        optimizer.step()


def perturb_parameters(module, seed: int = 3, scale: float = 0.3) -> None:
    """Add ``scale`` times standard normal noise to every parameter, so that checks do not meet
    the special values of an initialisation (zeros, ones)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


def shuffled_digits(size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels): the 1797 digits resized to ``size`` x ``size``, scaled to [0, 1], in an order
    drawn from ``rng``."""
    from lamina.data import load_digits

    x, labels = load_digits(size=size)
    order = rng.permutation(len(x))
    return (x.astype(np.float32) / 255.0)[order], labels[order]


def accuracy(model, x, labels) -> float:
    """The fraction of ``x`` that ``model``, in evaluation mode, classifies as ``labels``."""
    model.eval()
    with lamina.no_grad():
        predicted = model(lamina.tensor(x)).numpy().argmax(axis=1)
    return float(np.mean(predicted == labels))


def compare_layer_with_torch(layer, params, reference, x, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """A float64 ``layer`` against ``reference(x, *params)`` written in torch: the outputs on
    ``x`` within ``rtol``/``atol``, the gradients (of a random projection of the output) with
    respect to ``x`` and to each of the layer's parameters ``params`` within ten times those."""
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xt = torch.tensor(x, requires_grad=True)
    yl, yt = layer(xl), reference(xt, *theirs)
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy(), rtol=rtol, atol=atol)
    up = randn(*yl.shape, seed=5)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=10 * rtol, atol=10 * atol)
    for ours, expected in zip(params, theirs):
        np.testing.assert_allclose(ours.grad, expected.grad.numpy(), rtol=10 * rtol, atol=10 * atol)


def swap_in(module, name: str, value) -> None:
    """Put the tensor ``value`` where ``module`` holds the parameter ``name`` (or the tensor an
    earlier call put there), so that a function of it can be compared or gradient-checked: a
    parameter takes only a Parameter, so the old one is deleted first (as in PyTorch)."""
    delattr(module, name)
    setattr(module, name, value)
