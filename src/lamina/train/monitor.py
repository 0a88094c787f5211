"""``HistogramMonitor``: histograms of parameters, gradients and activations during training
(course notes, General advice; Activation functions: dead ReLUs, saturated sigmoid and tanh).

Recorded at train begin (epoch 0) and after every ``every``-th epoch, as histograms and scalars
only (memory stays bounded):

* per parameter: histogram, mean, std, min, max and L2 norm of its values and of its last
  gradient (the epoch's last mini-batch's, clipped and weighted as the optimizer used it), and
  the update ratio ||w_t - w_(t-1)|| / ||w_(t-1)|| of the epoch's last optimizer step, measured
  on the weights so that it holds for any optimizer (about 1e-3 is healthy);
* per layer output on a fixed probe batch (evaluation mode, no gradients): histogram, mean, std,
  fraction of exact zeros, fraction of dead units (channels, the last axis, 0 at every position
  of every probe sample) and for tanh / sigmoid layers the fraction saturated (|a| > 0.99 for
  tanh, a < 0.01 or a > 0.99 for sigmoid).
"""

from __future__ import annotations

import math
import os

import numpy as np

import lamina
from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.io.atomic import save_figure
from lamina.nn.activation import ACTIVATIONS, Activation, ReLU, ReLU6, Sigmoid, Tanh
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.train.callbacks import Callback

UPDATE_RATIO_RANGE = (1e-5, 1e-1)
"""Update ratios of a weight outside this range are reported by :meth:`HistogramMonitor.warnings`."""

_KINDS = {"relu": "relu", "relu6": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def activation_kind(module: Module) -> str | None:
    """'relu', 'tanh' or 'sigmoid' for a layer whose output is that activation: ReLU, ReLU6, Tanh
    and Sigmoid layers, ``Activation`` of those names, and layers with an ``activation`` (Dense,
    Conv2D, ...) given by one of those names or layers; None for any other layer."""
    for layer_type, kind in ((ReLU, "relu"), (ReLU6, "relu"), (Tanh, "tanh"), (Sigmoid, "sigmoid")):
        if isinstance(module, layer_type):
            return kind
    if isinstance(module, Activation):
        return _KINDS.get(module.activation.lower())
    act = getattr(module, "activation", None)
    if isinstance(act, Module):
        return activation_kind(act)
    return next((kind for name, kind in _KINDS.items() if act is not None and act is ACTIVATIONS[name]), None)


def _cells(values: list) -> str:
    return "".join(f"{'-' if v is None else format(v, '.3g'):>11}" for v in values)


def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(x, dtype=np.float64))))


def _histogram(values: np.ndarray, bins: int) -> dict:
    """Histogram of the finite values and statistics of all of them (NaN and infinities are
    counted as ``nonfinite`` and make the statistics NaN or infinite)."""
    values = np.asarray(values).ravel()
    finite = np.isfinite(values)
    counts, edges = np.histogram(values[finite], bins=bins)
    wide = values.astype(np.float64)
    stats = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "norm": _norm}
    with np.errstate(invalid="ignore", over="ignore"):  # infinities give NaN statistics, as they should
        summary = {k: float(f(wide)) if values.size else math.nan for k, f in stats.items()}
    return {"counts": counts, "edges": edges, "nonfinite": int(values.size - finite.sum()), **summary}


def _activation_record(module: Module, a: np.ndarray, bins: int) -> dict:
    kind = activation_kind(module)
    channels = a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a.reshape(-1, 1)
    saturated = None
    if kind == "tanh":
        saturated = float(np.mean(np.abs(a) > 0.99))
    elif kind == "sigmoid":
        saturated = float(np.mean((a < 0.01) | (a > 0.99)))
    return {"kind": kind, **_histogram(a, bins), "zero_fraction": float(np.mean(a == 0)),
            "dead_fraction": float(np.mean(np.all(channels == 0, axis=0))), "saturated_fraction": saturated}


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


class HistogramMonitor(Callback):
    """Record histograms and statistics after every ``every``-th epoch (epochs 0, every, 2 every...).

    ``probe``: a small fixed input batch for the activations (None: the first 64 training samples
    when the training data are arrays). ``layers``: module paths as ``model.named_modules()`` names
    them (``["dense", "block.conv"]``), None for all. ``records``: one plain dict per record,
    ``{"epoch", "parameters": {name: {"layer", "shape", "values", "grad", "update_ratio"}},
    "activations": {path: {"kind", "counts", "edges", "mean", ..., "dead_fraction", ...}}}``.
    """

    def __init__(self, every: int = 1, bins: int = 30, probe=None, layers=None, activations: bool = True):
        self.every = _positive_int("HistogramMonitor", "every", every)
        self.bins = _positive_int("HistogramMonitor", "bins", bins)
        if probe is not None and (np.ndim(probe) == 0 or len(probe) == 0):
            raise ValueError(f"HistogramMonitor: probe must be a non-empty batch (samples first), "
                             f"got shape {np.shape(probe)}")
        if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"HistogramMonitor: layers must be a list of module names or None, got {layers!r}")
        self.probe = None if probe is None else np.asarray(probe)
        self.layers = None if layers is None else list(layers)
        self.activations = bool(activations)
        self.records: list[dict] = []
        self._before: dict[str, tuple] | None = None  # name -> (parameter, its values before the latest step)
        self._steps = 0
        self._ratios: dict[str, float | None] = {}

    # -- hooks -----------------------------------------------------------------------------
    def on_train_begin(self, logs: dict) -> None:
        model = self.trainer.model
        if self.layers is not None:
            known = [path for path, _ in model.named_modules() if path]
            unknown = [name for name in self.layers if name not in known]
            if unknown:
                raise ValueError(f"HistogramMonitor: unknown layers {unknown}; the model has {known}")
        if self.activations and self.probe is None:
            x = getattr(getattr(self.trainer.loader, "dataset", None), "x", None)
            self.probe = None if x is None else np.asarray(x[:64])
        self._record(0)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self._before = None
        if (epoch + 1) % self.every == 0:
            self._steps = self.trainer.steps
            self._before = {name: (p, np.array(backend.to_numpy(p.data), copy=True))
                            for name, p in self._parameters() if p.trainable}

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        if self._before is None or self.trainer.steps == self._steps:
            return  # not a recorded epoch, or no optimizer step yet (gradient accumulation)
        self._steps = self.trainer.steps
        for name, (p, before) in self._before.items():
            w = backend.to_numpy(p.data)
            base = _norm(before)
            self._ratios[name] = _norm(w - before) / base if base > 0 else None
            np.copyto(before, w)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if (epoch + 1) % self.every == 0:
            self._record(epoch + 1)
        self._before = None

    # -- recording ---------------------------------------------------------------------------
    def _wanted(self, path: str) -> bool:
        return self.layers is None or any(path == n or path.startswith(n + ".") for n in self.layers)

    def _parameters(self) -> list:
        return [(name, p) for name, p in self.trainer.model.named_parameters() if self._wanted(name.rpartition(".")[0])]

    def _record(self, epoch: int) -> None:
        parameters = {}
        for name, p in self._parameters():
            values = backend.to_numpy(p.data)
            grad = None if p.grad is None else _histogram(backend.to_numpy(p.grad), self.bins)
            parameters[name] = {"layer": name.rpartition(".")[0], "shape": tuple(values.shape),
                                "values": _histogram(values, self.bins), "grad": grad,
                                "update_ratio": self._ratios.get(name)}
        activations = self._probe_activations() if self.activations and self.probe is not None else {}
        self.records.append({"epoch": epoch, "parameters": parameters, "activations": activations})
        self._ratios = {}

    def _probe_activations(self) -> dict:
        """Each watched layer's output on the probe batch, in evaluation mode without gradients;
        every module's own mode is put back afterwards. A layer called more than once keeps its
        last call; outputs that are not tensors (tuples of states) are skipped."""
        model = self.trainer.model
        paths = {id(m): path for path, m in model.named_modules() if path or not model._modules}
        outputs: dict[str, dict] = {}

        def watch(module, inputs, kwargs, forward):
            out = forward()
            path = paths.get(id(module))
            if path is not None and isinstance(out, Tensor) and self._wanted(path):
                outputs[path] = _activation_record(module, backend.to_numpy(out.data), self.bins)
            return out

        try:
            with evaluation_mode(model), no_grad(), intercept_calls(watch):
                model(lamina.tensor(self.probe))
        except ValueError as exc:  # ShapeError included
            error = ShapeError if isinstance(exc, ShapeError) else ValueError
            raise error(f"HistogramMonitor: the probe batch of shape {self.probe.shape} does not fit the "
                        f"model: {exc}") from exc
        return outputs

    # -- reports -----------------------------------------------------------------------------
    def summary_table(self) -> str:
        """The latest record as text: one row per parameter, then one per layer output."""
        if not self.records:
            return "HistogramMonitor: nothing recorded yet"
        last = self.records[-1]
        lines = [f"epoch {last['epoch']}", f"{'parameter':<24}{'mean':>11}{'std':>11}{'min':>11}{'max':>11}"
                 f"{'norm':>11}{'grad norm':>11}{'update':>11}"]
        for name, rec in last["parameters"].items():
            v, g, r = rec["values"], rec["grad"], rec["update_ratio"]
            lines.append(f"{name:<24}" + _cells([v[k] for k in ("mean", "std", "min", "max", "norm")]
                                                + [g and g["norm"], r]))
        if last["activations"]:
            lines.append(f"{'layer':<24}{'kind':>11}{'mean':>11}{'std':>11}{'zeros':>11}{'dead':>11}{'saturated':>11}")
        for path, a in last["activations"].items():
            lines.append(f"{path:<24}{a['kind'] or '-':>11}" + _cells(
                [a["mean"], a["std"], a["zero_fraction"], a["dead_fraction"], a["saturated_fraction"]]))
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """Problems in every record: NaN or infinite values, ReLU layers with more than half of
        their units dead, tanh/sigmoid layers with more than half of their outputs saturated, and
        weights (parameters of 2 axes or more; biases start at 0) whose update ratio lies outside
        ``UPDATE_RATIO_RANGE``."""
        low, high = UPDATE_RATIO_RANGE
        found = []
        for rec in self.records:
            at = f"epoch {rec['epoch']}:"
            for name, p in rec["parameters"].items():
                for part, h in (("values", p["values"]), ("gradient", p["grad"])):
                    if h is not None and h["nonfinite"]:
                        found.append(f"{at} {name} has {h['nonfinite']} NaN or infinite {part}")
                r = p["update_ratio"]
                if r is not None and len(p["shape"]) >= 2 and not low <= r <= high:
                    too = "low" if r < low else "high"
                    found.append(f"{at} {name} update ratio {r:.3g} is outside [{low:g}, {high:g}] (about 1e-3 is "
                                 f"healthy): the learning rate looks too {too}")
            for path, a in rec["activations"].items():
                if a["nonfinite"]:
                    found.append(f"{at} layer {path} outputs {a['nonfinite']} NaN or infinite values")
                if a["kind"] == "relu" and a["dead_fraction"] > 0.5:
                    found.append(f"{at} layer {path}: {a['dead_fraction']:.0%} of its ReLU units are dead "
                                 "(0 on every probe sample)")
                if a["saturated_fraction"] is not None and a["saturated_fraction"] > 0.5:
                    found.append(f"{at} layer {path}: {a['saturated_fraction']:.0%} of its {a['kind']} outputs "
                                 "are saturated")
        return found

    def plot(self, path: str | os.PathLike, what: str = "weights") -> None:
        """Save a PNG grid of histograms, one subplot per parameter ('weights', 'gradients') or
        per layer output ('activations'), one line per recorded epoch (dark to light)."""
        key = {"weights": "values", "gradients": "grad", "activations": None}
        if what not in key:
            raise ValueError(f"HistogramMonitor.plot: what must be one of {sorted(key)}, got {what!r}")
        panels: dict[str, list] = {}
        for i, rec in enumerate(self.records):
            items = rec["activations"].items() if what == "activations" else \
                ((name, p[key[what]]) for name, p in rec["parameters"].items())
            for name, h in items:
                if h is not None:
                    panels.setdefault(name, []).append((i, rec["epoch"], h))
        if not panels:
            raise ValueError(f"HistogramMonitor.plot: no {what} recorded yet")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(self.records)))
        for ax, (name, series) in zip(axes.flat, panels.items(), strict=False):
            for i, epoch, h in series:
                ax.stairs(h["counts"], h["edges"], color=colors[i], label=f"epoch {epoch}")
            ax.set_title(name or type(self.trainer.model).__name__, fontsize=9)
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"{what} histograms")
        fig.tight_layout()
        save_figure(fig, path, dpi=80)
