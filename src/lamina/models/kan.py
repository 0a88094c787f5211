"""Kolmogorov-Arnold networks (Liu et al. 2024): a stack of :class:`~lamina.nn.KANLinear`
layers with pykan's tools for reading and shrinking them.

``KAN([2, 5, 1])`` maps 2 inputs through 5 hidden nodes to 1 output; every edge carries its
own learned function phi. Around training:

* :meth:`KAN.update_grid`: each layer's grid moved to the quantiles of the data reaching it
  (efficient-kan), outputs kept by a least-squares refit;
* :meth:`KAN.refine`: grid extension, a copy with ``new_grid_size`` intervals whose splines
  are fitted to the coarse model's on the data (pykan's ``refine``);
* :meth:`KAN.prune`: a copy without the hidden nodes whose largest incoming and outgoing edge
  scale (mean |phi| on the data, the KAN paper's L1 norm of an activation) are not both above
  ``threshold``;
* :meth:`KAN.plot`: each edge's phi against its input, one panel per edge;
* :meth:`KAN.auto_symbolic`: each edge fitted by a f(b x + c) + d over a small library of
  functions (:func:`~lamina.nn.kan_symbolic.fit_symbolic`) with its R^2, and, with
  ``fix=True``, the edges fitted well enough replaced by their formulas.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.io.atomic import atomic_write
from lamina.nn.kan import KANLinear
from lamina.nn.kan_symbolic import fit_symbolic
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["KAN"]


@register_layer
class KAN(Module):
    """A KAN of ``widths`` [n_in, hidden..., n_out]; the remaining keywords go to every
    :class:`~lamina.nn.KANLinear` (``grid_size``, ``spline_order``, ``grid_range``, ...).
    The layers (``layer0``, ``layer1``, ...) are built at once, their widths being known."""

    def __init__(self, widths, name: str | None = None, **layer_options):
        super().__init__(name=name)
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"KAN: widths must list at least 2 positive sizes [n_in, ..., n_out], got {widths}")
        self.widths = widths
        self.layer_options = dict(layer_options)
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layer = KANLinear(n_out, name=f"layer{index}", **layer_options)
            layer.build((None, n_in))
            layer.build_input_shape = (None, n_in)
            setattr(self, f"layer{index}", layer)
        self.built = True

    @property
    def layers(self) -> list[KANLinear]:
        return [self._modules[f"layer{i}"] for i in range(len(self.widths) - 1)]

    def forward(self, x) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_inputs(self, x) -> list[np.ndarray]:
        """The data reaching each layer, (batch, widths[l]), without gradients."""
        with no_grad():
            h = as_tensor(x)
            if h.ndim != 2 or h.shape[1] != self.widths[0]:
                raise ShapeError(f"{self._label()}: x must have shape (batch, {self.widths[0]}), got {h.shape}")
            inputs = []
            for layer in self.layers:
                inputs.append(h.numpy())
                h = layer(h)
        return inputs

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Tensor:
        """The sum of the layers' :meth:`KANLinear.regularization_loss` (efficient-kan's KAN)."""
        losses = [layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers]
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        return total

    # -- grids ---------------------------------------------------------------------------------
    def update_grid(self, x, margin: float = 0.01, grid_eps: float | None = None) -> None:
        """Each layer's grid from the data reaching it, in order (efficient-kan's
        ``forward(x, update_grid=True)``); see :meth:`KANLinear.regrid`."""
        with no_grad():
            h = as_tensor(x)
            for layer in self.layers:
                layer.update_grid(h, margin, grid_eps)
                h = layer(h)

    def refine(self, new_grid_size: int, x, margin: float = 0.01, grid_eps: float | None = None) -> KAN:
        """Grid extension: a copy whose layers have ``new_grid_size`` intervals on grids from
        the data ``x``, each spline fitted by least squares to this model's on the data
        reaching that layer here. Train the copy further (new optimiser: new parameters)."""
        inputs = self.layer_inputs(x)
        refined = copy.deepcopy(self)
        for layer, h in zip(refined.layers, inputs):
            layer.regrid(h, new_grid_size, margin, grid_eps)
        refined.layer_options["grid_size"] = int(new_grid_size)
        return refined

    # -- pruning -------------------------------------------------------------------------------
    def edge_scales(self, x) -> list[np.ndarray]:
        """Per layer, (widths[l+1], widths[l]): mean over the data of |phi_{j,i}(x_i)|."""
        return [np.abs(layer.edge_activations(h)).mean(axis=0) for layer, h in zip(self.layers, self.layer_inputs(x))]

    def node_scores(self, x) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each hidden layer, (incoming, outgoing): the largest scale of the edges into and
        out of every node."""
        scales = self.edge_scales(x)
        return [(scales[l].max(axis=1), scales[l + 1].max(axis=0)) for l in range(len(scales) - 1)]

    def prune(self, x, threshold: float = 1e-2) -> KAN:
        """A copy without the hidden nodes whose incoming or outgoing score (:meth:`node_scores`)
        is at most ``threshold``; every hidden layer keeps at least its best node."""
        scores = self.node_scores(x)
        pruned = copy.deepcopy(self)
        layers = pruned.layers
        for l, (incoming, outgoing) in enumerate(scores):
            keep = np.nonzero((incoming > threshold) & (outgoing > threshold))[0]
            if keep.size == 0:
                keep = np.array([int(np.argmax(np.minimum(incoming, outgoing)))])
            _keep_outputs(layers[l], keep)
            _keep_inputs(layers[l + 1], keep)
            pruned.widths[l + 1] = int(keep.size)
        return pruned

    # -- reading -------------------------------------------------------------------------------
    def plot(self, x, path: str | Path | None = None, panel_size: float = 1.6):
        """A matplotlib figure of every edge's phi against its input on the data ``x``: one row
        of panels per (layer, output node), one column per input node; the title gives the
        edge and its scale. Written atomically as a PNG when ``path`` is given."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        inputs = self.layer_inputs(x)
        rows = sum(self.widths[1:])
        cols = max(self.widths[:-1])
        fig = Figure(figsize=(panel_size * cols, panel_size * rows))
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        row = 0
        for l, (layer, h) in enumerate(zip(self.layers, inputs)):
            phi = layer.edge_activations(h)
            for j in range(layer.units):
                for i in range(layer.in_features):
                    order = np.argsort(h[:, i])
                    ax = axes[row, i]
                    ax.axis("on")
                    ax.plot(h[order, i], phi[order, j, i], lw=1.2)
                    ax.set_title(f"L{l}: {i}->{j} ({np.abs(phi[:, j, i]).mean():.2g})", fontsize=7)
                    ax.tick_params(labelsize=6)
                row += 1
        fig.tight_layout()
        if path is not None:
            try:
                with atomic_write(path) as handle:
                    fig.savefig(handle, format="png", dpi=100)
            except OSError as exc:
                raise OSError(f"{self._label()}.plot: cannot write the PNG {os.fspath(path)!r}: {exc}") from exc
        return fig

    def auto_symbolic(self, x, functions=None, fix: bool = False, r2_threshold: float = 0.99) -> list[dict]:
        """For every edge, the library function of the best R^2 (:func:`fit_symbolic` on the
        edge's inputs and phi values on the data ``x``). Returns one dict per edge: ``layer``,
        ``input``, ``output``, ``function``, ``params`` (a, b, c, d) and ``r2``. With ``fix``,
        the edges of R^2 >= ``r2_threshold`` become their formulas (:meth:`KANLinear.fix_symbolic`)."""
        report = []
        for l, (layer, h) in enumerate(zip(self.layers, self.layer_inputs(x))):
            phi = layer.edge_activations(h)
            for j in range(layer.units):
                for i in range(layer.in_features):
                    fits = fit_symbolic(h[:, i], phi[:, j, i], functions)
                    if not fits:
                        continue
                    best = fits[0]
                    report.append({"layer": l, "input": i, "output": j, "function": best.function,
                                   "params": best.params, "r2": best.r2})
                    if fix and best.r2 >= r2_threshold:
                        layer.fix_symbolic(j, i, best.function, best.params)
        return report

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if not shape or (shape[-1] is not None and shape[-1] != self.widths[0]):
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, ..., {self.widths[0]}), got {shape}")
        return shape[:-1] + (self.widths[-1],)

    def get_config(self) -> dict:
        return {"widths": list(self.widths), "name": self.name, **self.layer_options}

    def extra_repr(self) -> str:
        return f"widths={self.widths}"


def _keep_outputs(layer: KANLinear, keep: np.ndarray) -> None:
    for name in ("base_weight", "spline_weight", "spline_scaler"):
        if name in layer._parameters:
            layer.add_parameter(name, layer._parameters[name].numpy()[keep].copy())
    layer.register_buffer("symbolic_index", layer.symbolic_index[keep].copy())
    layer.register_buffer("symbolic_params", layer.symbolic_params[keep].copy())
    layer.units = int(keep.size)


def _keep_inputs(layer: KANLinear, keep: np.ndarray) -> None:
    for name in ("base_weight", "spline_weight", "spline_scaler"):
        if name in layer._parameters:
            layer.add_parameter(name, layer._parameters[name].numpy()[:, keep].copy())
    layer.register_buffer("grid", layer.grid[keep].copy())
    layer.register_buffer("symbolic_index", layer.symbolic_index[:, keep].copy())
    layer.register_buffer("symbolic_params", layer.symbolic_params[:, keep].copy())
    layer.build_input_shape = (None, int(keep.size))
