r"""K-FAC: natural-gradient steps with a Kronecker-factored Fisher per Dense and Conv2D layer.

A layer computes z = W^T a (Dense: a row of its input; Conv2D: one im2col patch of the input,
at each output location t). With the bias folded in as a homogeneous 1, abar = [a, 1], the
gradient of a sample's loss l_i is the matrix M_i = sum_t abar_t g_t^T, g_t = dl_i/dz_t, laid
out as (d_A, d_G): the weight's gradient with the bias's as the last row (a Conv2D's weight
(K, f, f, c_in) read as the matrix (K, f f c_in) and transposed). Martens & Grosse (2015)
approximate the Fisher block of the layer, F = E_i[vec(M_i) vec(M_i)^T] (row-major vec), by
the Kronecker product of two small matrices::

    A = (1/N) sum_i sum_t abar_it abar_it^T          (d_A, d_A)
    G = (1/(N T)) sum_i sum_t g_it g_it^T             (d_G, d_G),   F ~ A kron G

with T the number of output locations (1 for a Dense layer on (N, features); Grosse & Martens
2016, "KFC", for convolutions: spatially uncorrelated derivatives). The g are gradients of the
per-sample losses: with a mean loss the gradient reaching z is multiplied back by N.

:class:`KFAC` keeps running averages of A and G (``stat_decay``), takes their
eigendecompositions every ``T_inv`` steps and preconditions the gradient matrix M with the
Tikhonov damping lambda split between the factors by pi (Martens & Grosse, section 6.3)::

    pi = sqrt((tr(A) / d_A) / (tr(G) / d_G))
    V  = (A + sqrt(lambda)/pi I)^-1  M  (G + pi sqrt(lambda) I)^-1
       = Q_A [ (Q_A^T M Q_G) / ((l_A + sqrt(lambda)/pi) (l_G + pi sqrt(lambda))^T) ] Q_G^T

(element-wise division by the outer product of the damped eigenvalues). KL clipping
rescales every layer's V by nu = min(1, sqrt(kl_clip / (lr^2 sum_layers V . M))); then SGD
with momentum: d = nu V + weight_decay w, b = momentum b + d, w = w - lr b. Parameters of
other layers take the same momentum step from their plain gradient.

:class:`EKFAC` (George et al. 2018) keeps the eigenbases Q_A, Q_G and replaces the Kronecker
product of the eigenvalues by the second moments of the per-sample gradients in that basis,
S = E_i[(Q_A^T M_i Q_G)^2], re-estimated every statistics step::

    V = Q_A [ (Q_A^T M Q_G) / (S + lambda) ] Q_G^T

The Fisher: ``'empirical'`` uses the gradients of the training loss itself (no extra work);
``'mc'`` draws one target per sample from the model's predictive distribution and ``'true'``
takes the exact expectation over the classes (one backward per class), both through
:meth:`KFAC.backward_fisher`, called on the model's output before the loss's backward (the
gradients seeding those backward passes are in :mod:`lamina.optim.kfac_fisher`; the recording of
A and G in :mod:`lamina.optim.kfac_factors`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lamina import backend, parallel
from lamina.autograd import Tensor
from lamina.autograd.derivatives import grad as gradients_of
from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.optim.inplace import axpy, scale
from lamina.optim.kfac_factors import (
    FactorRecorder,
    exact_fisher_block,
    gradient_matrix,
    kronecker_factors,
    preconditioned_layers,
    split_matrix,
)
from lamina.optim.kfac_fisher import FISHERS, LIKELIHOODS, fisher_seed_gradients
from lamina.optim.optimizer import Optimizer

__all__ = ["EKFAC", "KFAC", "exact_fisher_block", "kronecker_factors"]


# -- the optimizer --------------------------------------------------------------------------------

class KFAC(Optimizer):
    r"""K-FAC (Martens & Grosse 2015; KFC for Conv2D, Grosse & Martens 2016): see the module
    docstring for the statistics, the damping, the KL clipping and the momentum step.

    ``model``: a built model; every Dense and Conv2D (groups=1) layer under it is
    preconditioned, every other parameter takes a plain SGD-with-momentum step. The model's
    layers are recorded while the optimizer lives (by intercepting their calls), so the
    usual loop works::

        opt = KFAC(model, lr=0.05)
        for x, y in batches:
            opt.zero_grad()
            cross_entropy(model(x), y).backward()
            opt.step()

    With ``fisher='mc'`` or ``'true'`` the factor G comes from targets drawn from the model::

        out = model(x)
        opt.backward_fisher(out)          # sampled backward: G only, no .grad changes
        cross_entropy(out, y).backward()
        opt.step()

    (``opt.step(closure)`` with a closure doing the same also works.) Statistics are gathered
    on the steps t with t % T_stats == 0 (t counts from 0), the inverses refreshed when
    t % T_inv == 0. ``loss_reduction``: whether the loss is a mean over the batch (the
    gradients are multiplied back by N to be per-sample ones) or a sum. ``kl_clip=None``
    turns clipping off. Hooks registered on a preconditioned layer itself do not run while the
    optimizer lives (its forward is computed by the recorder, to reach the pre-activation).
    """

    _state_arrays = ("momentum_buffer",)
    _keeps_samples = False           # EKFAC keeps each call's abar and g for its per-sample scales

    def __init__(self, model: Module, lr: float, damping: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, stat_decay: float = 0.95, T_inv: int = 10, T_stats: int = 1,
                 fisher: str = "empirical", kl_clip: float | None = 1e-3, loss_reduction: str = "mean"):
        if not isinstance(model, Module):
            raise TypeError(f"{type(self).__name__}: expects the model (a Module), got {type(model).__name__}")
        named = preconditioned_layers(model, type(self).__name__)
        super().__init__(model, lr=lr, weight_decay=weight_decay, damping=damping, momentum=momentum,
                         stat_decay=stat_decay, T_inv=T_inv, T_stats=T_stats, fisher=fisher, kl_clip=kl_clip,
                         loss_reduction=loss_reduction)
        self.model = model
        self.layer_names = [name for name, _ in named]
        self.layers = [m for _, m in named]
        self._known = {id(p) for p in model.parameters()}
        self.factors: list[dict[str, Any]] = [{} for _ in self.layers]
        self.recorder = FactorRecorder(self.layers)
        self.recorder.loss_reduction = loss_reduction
        self.recorder.keep_samples = self._keeps_samples
        self.recorder.record_gradients = fisher == "empirical"
        self.recorder.recording = True
        self.recorder.attach()

    def __del__(self):
        recorder = self.__dict__.get("recorder")
        if recorder is not None:
            recorder.detach()

    def detach(self) -> None:
        """Stop recording the model's layers (done when the optimizer is garbage-collected); later
        steps keep the factors held, layers that never had any take plain momentum steps."""
        self.recorder.detach()

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        damping = hp["damping"]
        if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not damping > 0 or \
                not math.isfinite(damping):
            raise ValueError(f"{self._name}: damping must be a finite number > 0, got {damping!r}")
        self._check_number("momentum", hp["momentum"], low=0.0, high=1.0, high_open=True)
        self._check_number("stat_decay", hp["stat_decay"], low=0.0, high=1.0, high_open=True)
        for key in ("T_inv", "T_stats"):
            value = hp[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self._name}: {key} must be a positive integer, got {value!r}")
        if hp["fisher"] not in FISHERS:
            raise ValueError(f"{self._name}: fisher must be one of {FISHERS}, got {hp['fisher']!r}")
        if hp["kl_clip"] is not None:
            self._check_number("kl_clip", hp["kl_clip"], low=0.0)
        if hp["loss_reduction"] not in ("mean", "sum"):
            raise ValueError(f"{self._name}: loss_reduction must be 'mean' or 'sum', got {hp['loss_reduction']!r}")

    @property
    def _group(self) -> dict:
        return self.param_groups[0]

    # -- the sampled Fisher ------------------------------------------------------------------
    def backward_fisher(self, output: Tensor, likelihood: str = "categorical", seed: int | None = None) -> None:
        """Record G from targets drawn from the model's predictive distribution at ``output``
        (logits of a softmax for ``'categorical'``, whose loss is the cross-entropy; the mean of
        a unit-variance normal for ``'gaussian'``, whose loss per sample is
        0.5 * sum (output - target)^2): one drawn target per sample (``fisher='mc'``) or the
        exact expectation (``'true'``: one backward per class or output). ``seed`` seeds the
        draws. Leaves every ``.grad`` as it was and keeps the graph, so the loss's backward can
        follow."""
        fisher = self._group["fisher"]
        if fisher == "empirical":
            raise ValueError(f"{self._name}.backward_fisher: fisher='empirical' takes G from the loss's own "
                             "backward; construct the optimizer with fisher='mc' or 'true' to sample")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"{self._name}.backward_fisher: likelihood must be one of {LIKELIHOODS}, "
                             f"got {likelihood!r}")
        if not isinstance(output, Tensor) or not output.requires_grad:
            raise ValueError(f"{self._name}.backward_fisher: expects the model's output, a tensor on the graph")
        out = output.data
        passes = fisher_seed_gradients(out, fisher, likelihood, seed)
        recorder = self.recorder
        params = [m.weight for m in self.layers]
        recorder.record_gradients = recorder.sampling = True
        try:
            for seed_gradient, weight in passes:
                recorder.count_weight = weight
                gradients_of(output, params, grad_output=seed_gradient.reshape(out.shape), retain_graph=True,
                             allow_unused=True)
        finally:
            recorder.record_gradients = recorder.sampling = False
            recorder.count_weight = 1.0

    # -- stepping ------------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One K-FAC step from the gradients (and the statistics recorded since the last step);
        returns ``closure()`` if given (it runs the forward and backward passes)."""
        due = self.step_count % self._group["T_stats"] == 0
        self.recorder.recording = due
        loss = closure() if closure is not None else None
        self._check_layers()
        refresh = self.step_count % self._group["T_inv"] == 0
        with parallel.one_blas_thread():
            if due:
                self._update_statistics()
            if refresh:
                self._refresh_bases()
            if due:
                self._update_scales()
            self._apply_update()
            self._mark_updated()
        self.step_count += 1
        self.recorder.batches.clear()
        self.recorder.recording = self.step_count % self._group["T_stats"] == 0
        return loss

    def _check_layers(self) -> None:
        added = [name for name, p in self.model.named_parameters() if id(p) not in self._known]
        if added:
            raise RuntimeError(f"{self._name}: parameter(s) {added} were built after the optimizer was made; "
                               "build the whole model (call it once on an input) before making the optimizer")

    def _update_statistics(self) -> None:
        decay = self._group["stat_decay"]
        fisher = self._group["fisher"]
        for i in range(len(self.layers)):
            batch = self.recorder.batches.get(i)
            if batch is None or batch.a_sum is None:
                continue
            if batch.g_sum is None:
                if fisher != "empirical":
                    raise RuntimeError(f"{self._name}: fisher={fisher!r} takes G from backward_fisher(output), "
                                       "which was not called before this step")
                continue
            a, g = batch.a_sum / batch.a_count, batch.g_sum / batch.g_count
            state = self.factors[i]
            if "A" not in state:
                state["A"], state["G"] = a, g
            else:
                state["A"] = decay * state["A"] + (1 - decay) * a
                state["G"] = decay * state["G"] + (1 - decay) * g

    def _update_scales(self) -> None:
        """EKFAC's hook: the per-sample second moments in the eigenbasis."""

    def _refresh_bases(self) -> None:
        xp = backend.xp
        for state in self.factors:
            if "A" not in state:
                continue
            state["A_values"], state["A_vectors"] = xp.linalg.eigh(state["A"])
            state["G_values"], state["G_vectors"] = xp.linalg.eigh(state["G"])
            self._bases_refreshed(state)

    def _bases_refreshed(self, state: dict[str, Any]) -> None:
        """EKFAC's hook: called after new eigenbases are taken."""

    def precondition(self, index: int, matrix):
        """V for the (d_A, d_G) gradient matrix of layer ``index`` (the damped Kronecker solve)."""
        xp = backend.xp
        state = self.factors[index]
        a_values, g_values = state["A_values"], state["G_values"]
        root = math.sqrt(self._group["damping"])
        pi = math.sqrt(max(float(xp.mean(a_values)), 0.0) / max(float(xp.mean(g_values)), 1e-300))
        pi = pi if pi > 0 else 1.0
        qa, qg = state["A_vectors"], state["G_vectors"]
        rotated = qa.T @ matrix @ qg
        rotated /= xp.outer(xp.maximum(a_values, 0) + root / pi, xp.maximum(g_values, 0) + root * pi)
        return qa @ rotated @ qg.T

    def _apply_update(self) -> None:
        group = self._group
        xp = backend.xp
        directions: dict[int, Any] = {}
        vg = 0.0
        for i, module in enumerate(self.layers):
            weight = module.weight
            bias = module.bias if module.use_bias else None
            if weight.grad is None or (bias is not None and bias.grad is None) or "A_values" not in self.factors[i]:
                continue
            matrix = gradient_matrix(module, _array(weight.grad), None if bias is None else _array(bias.grad))
            v = self.precondition(i, matrix)
            vg += float(xp.vdot(v, matrix))
            directions[i] = v
        nu = 1.0
        if group["kl_clip"] is not None and vg > 0:
            nu = min(1.0, math.sqrt(group["kl_clip"] / (group["lr"] ** 2 * vg)))
        steps: dict[int, Any] = {}
        for i, v in directions.items():
            module = self.layers[i]
            weight_step, bias_step = split_matrix(module, nu * v)
            steps[id(module.weight)] = weight_step
            if bias_step is not None:
                steps[id(module.bias)] = bias_step
        for index, p, _ in self._indexed():
            if p.grad is None or not getattr(p, "trainable", True):
                continue
            direction = steps.get(id(p))
            if direction is None:
                direction = _array(p.grad)
            direction = xp.array(direction, dtype=p.data.dtype)
            if group["weight_decay"]:
                axpy(group["weight_decay"], p.data, direction)
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {"momentum_buffer": xp.zeros_like(p.data)}
            buffer = state["momentum_buffer"]
            scale(group["momentum"], buffer)
            axpy(1.0, direction, buffer)
            axpy(-group["lr"], buffer, p.data)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state plus ``'factors'``: per preconditioned layer (by its
        position among them) the running A and G and their eigendecompositions."""
        saved = super().state_dict()
        saved["factors"] = {i: {k: backend.to_numpy(v).copy() for k, v in state.items()}
                            for i, state in enumerate(self.factors) if state}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        factors = state_dict.get("factors", {})
        restored: list[dict[str, Any]] = [{} for _ in self.layers]
        xp = backend.xp
        for key, entry in factors.items():
            i = int(key)
            if not 0 <= i < len(self.layers):
                raise ValueError(f"{self._name}.load_state_dict: factors for layer {i}, the optimizer has "
                                 f"{len(self.layers)}")
            dtype = self.layers[i].weight.data.dtype
            shapes = self._factor_shapes(i)
            for name, value in entry.items():
                if name not in shapes:
                    raise ValueError(f"{self._name}.load_state_dict: unknown factor entry {name!r}")
                array = xp.array(value, dtype=dtype)
                if tuple(array.shape) != shapes[name]:
                    raise ValueError(f"{self._name}.load_state_dict: {name!r} of layer {i} "
                                     f"({self.layer_names[i]}) has shape {tuple(array.shape)}, "
                                     f"expected {shapes[name]}")
                restored[i][name] = array
        super().load_state_dict(state_dict)
        self.factors = restored

    def _factor_shapes(self, index: int) -> dict[str, tuple[int, ...]]:
        module = self.layers[index]
        d_g = module.weight.shape[1] if type(module) is Dense else module.weight.shape[0]
        d_a = math.prod(module.weight.shape) // d_g + (1 if module.use_bias else 0)
        return {"A": (d_a, d_a), "G": (d_g, d_g), "A_values": (d_a,), "A_vectors": (d_a, d_a),
                "G_values": (d_g,), "G_vectors": (d_g, d_g), "scales": (d_a, d_g)}


class EKFAC(KFAC):
    r"""Eigenvalue-corrected K-FAC (George et al. 2018): K-FAC's eigenbases Q_A, Q_G (every
    ``T_inv`` steps) with the scaling S = E_i[(Q_A^T M_i Q_G)^2] of the per-sample gradients
    M_i re-estimated on every statistics step (running average with ``stat_decay``, restarted
    from K-FAC's l_A l_G^T on each new basis), and V = Q_A [(Q_A^T M Q_G) / (S + damping)] Q_G^T.
    Same arguments and call pattern as :class:`KFAC`."""

    _keeps_samples = True

    def _bases_refreshed(self, state: dict[str, Any]) -> None:
        xp = backend.xp
        state["scales"] = xp.outer(xp.maximum(state["A_values"], 0), xp.maximum(state["G_values"], 0))

    def _update_scales(self) -> None:
        xp = backend.xp
        decay = self._group["stat_decay"]
        for i, state in enumerate(self.factors):
            batch = self.recorder.batches.get(i)
            if batch is None or not batch.samples or "scales" not in state:
                continue
            qa, qg = state["A_vectors"], state["G_vectors"]
            total, count = 0.0, 0.0
            for abar, g, weight in batch.samples:
                projected = xp.matmul(xp.matmul(abar, qa).transpose(0, 2, 1), xp.matmul(g, qg))  # (N, d_A, d_G)
                total = total + (projected * projected).sum(axis=0)
                count += weight * abar.shape[0]
            state["scales"] = decay * state["scales"] + (1 - decay) * (total / count)

    def precondition(self, index: int, matrix):
        state = self.factors[index]
        qa, qg = state["A_vectors"], state["G_vectors"]
        rotated = qa.T @ matrix @ qg
        rotated /= state["scales"] + self._group["damping"]
        return qa @ rotated @ qg.T


def _array(value):
    return value.data if isinstance(value, Tensor) else value
