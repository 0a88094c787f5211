"""Multi-task recommenders on categorical fields: shared-bottom, MMoE and PLE.

The input is that of the click-through-rate models (:mod:`lamina.models.ctr`): the ids of ``F``
fields (B, F), embedded in one shared table, and optional dense features (B, num_dense),
flattened into x = [e_1 ; ... ; e_F ; dense] of width D. With ``field_dims=()`` the dense
features alone are the input (call ``model(None, dense)``). Every model returns
``{task: (B,)}``: logits for a "binary" task, values for a "regression" one, and its tower for
task k is h^k = MLP(tower_units) followed by one linear unit (ReLU between layers).

Shared bottom (Caruana 1997):   y_k = h^k(f(x)),  one MLP f shared by the tasks.

MMoE (Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts"), n experts f_i (ReLU MLPs of ``expert_units``), one gate per task:

    g^k(x) = softmax(W_gk x)   (n,)          f^k(x) = sum_i g^k_i(x) f_i(x)     y_k = h^k(f^k(x))

PLE (Tang et al. 2020, "Progressive Layered Extraction"), ``num_levels`` extraction levels of
``task_experts`` experts per task and ``shared_experts`` shared ones (Customized Gate Control).
At level j, with inputs q_k^{j-1} per task and q_s^{j-1} shared (all x at the first level):

    S_k^j = [E_k^j(q_k^{j-1}) ; E_s^j(q_s^{j-1})]           task k's and the shared experts' outputs
    q_k^j = softmax(W_k^j q_k^{j-1})^T S_k^j                 task gate over its own and the shared
    q_s^j = softmax(W_s^j q_s^{j-1})^T [E_1^j ; ... ; E_K^j ; E_s^j]   shared gate over all experts
                                                              (levels before the last only)
    y_k = h^k(q_k^L)

With one level and no task experts, PLE is MMoE with n = ``shared_experts`` (same weights, same
outputs). ``forward(..., return_gates=True)`` also returns the gate weights. :meth:`task_losses`
gives ``{task: loss}`` (binary cross-entropy on logits, or mean squared error), a dict that
:mod:`lamina.train.task_weighting` weightings take; :meth:`loss` is the weighted sum
sum_k w_k L_k.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.ctr import _check_fields, _dense_input, _FieldEmbedding, _mlp
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["MMoE", "PLE", "ExpertGroup", "SharedBottom"]

TASK_TYPES = ("binary", "regression")


@register_with_arguments
class ExpertGroup(Module):
    """``num_experts`` ReLU MLPs of widths ``units`` run side by side: (B, D) -> (B, E, units[-1]),
    expert e's layer j is relu(h W_j[e] + b_j[e]) with W_j (E, d_in, d_out)."""

    def __init__(self, num_experts: int, input_dim: int, units=(16,), name: str | None = None):
        super().__init__(name=name)
        self.num_experts = positive_int(num_experts, "ExpertGroup: num_experts")
        self.input_dim = positive_int(input_dim, "ExpertGroup: input_dim")
        self.units = tuple(positive_int(u, "ExpertGroup: layer width") for u in units)
        if not self.units:
            raise ValueError("ExpertGroup: units must list at least one layer width")
        dtype, glorot = backend.get_default_dtype(), initializers.get("glorot_uniform")
        width = input_dim
        for j, out in enumerate(self.units):
            self.add_parameter(f"kernel{j}", glorot((num_experts, width, out), width, out, dtype))
            self.add_parameter(f"bias{j}", backend.xp.zeros((num_experts, out), dtype=dtype))
            width = out
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ShapeError(f"{self._label()}: expected inputs (batch, {self.input_dim}), got {tuple(x.shape)}")
        h = F.relu(F.einsum("bd,edo->beo", x, self.kernel0) + self.bias0)
        for j in range(1, len(self.units)):
            h = F.relu(F.einsum("bed,edo->beo", h, getattr(self, f"kernel{j}")) + getattr(self, f"bias{j}"))
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])


def _mix(gate_logits: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
    """softmax gate (B, E) and its mixture sum_i g_i f_i of expert outputs (B, E, d) -> (B, d)."""
    gates = F.softmax(gate_logits, axis=-1)
    return gates, F.sum(F.reshape(gates, (*gates.shape, 1)) * experts, axis=1)


class _MultiTaskRecommender(Module):
    """The pieces every model here shares: field embedding, input checks, towers and losses."""

    def _setup(self, field_dims, tasks, tower_units, embed_dim: int, num_dense: int, task_types) -> int:
        who = type(self).__name__
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, who) if len(field_dims) else ()
        if not self.field_dims and num_dense <= 0:
            raise ValueError(f"{who}: with no categorical fields (field_dims=()) num_dense must be > 0, "
                             f"got {num_dense}")
        if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks) or len(set(tasks)) != len(tasks) \
                or len(tasks) == 0:
            raise ValueError(f"{who}: tasks must be distinct task names, at least one; got {tasks!r}")
        self.tasks = tuple(tasks)
        types = (task_types,) * len(self.tasks) if task_types is None or isinstance(task_types, str) \
            else tuple(task_types)
        types = tuple("binary" if t is None else t for t in types)
        if len(types) != len(self.tasks) or any(t not in TASK_TYPES for t in types):
            raise ValueError(f"{who}: task_types must be one of {TASK_TYPES} or one per task {list(self.tasks)}, "
                             f"got {task_types!r}")
        self.task_types = dict(zip(self.tasks, types))
        self.embed_dim, self.num_dense, self.tower_units = embed_dim, num_dense, tuple(tower_units)
        if self.field_dims:
            self.embedding = _FieldEmbedding(self.field_dims, embed_dim, who)
        return len(self.field_dims) * embed_dim + num_dense

    def _towers(self, width: int) -> None:
        self.towers = ModuleList([_mlp(width, self.tower_units, "relu", type(self).__name__, out_units=1)
                                  for _ in self.tasks])

    def _features(self, ids, dense) -> Tensor:
        if self.field_dims:
            e = self.embedding(ids)                                             # (B, F, k)
            x = F.reshape(e, (e.shape[0], -1))
            dense = _dense_input(self, dense, e.shape[0])
            return x if dense is None else F.concat([x, dense], axis=1)
        if ids is not None:
            raise ShapeError(f"{self._label()}: built with field_dims=() (dense features only), but field ids "
                             f"were given; call model(None, dense)")
        if dense is None or as_tensor(dense).ndim != 2:
            raise ShapeError(f"{self._label()}: expected dense features of shape (batch, {self.num_dense}), got "
                             f"{None if dense is None else tuple(as_tensor(dense).shape)}")
        return _dense_input(self, dense, as_tensor(dense).shape[0])

    def _heads(self, features: list) -> dict[str, Tensor]:
        return {task: F.reshape(tower(h), (-1,)) for task, tower, h in zip(self.tasks, self.towers, features)}

    def task_losses(self, outputs: Mapping, targets: Mapping) -> dict[str, Tensor]:
        """``{task: L_k}``: mean binary cross-entropy of the logits ("binary" tasks, targets in
        {0, 1}) or mean squared error ("regression"), for the outputs of :meth:`forward`."""
        for what, given in (("outputs", outputs), ("targets", targets)):
            if not isinstance(given, Mapping) or set(given) != set(self.tasks):
                keys = sorted(given) if isinstance(given, Mapping) else type(given).__name__
                raise ValueError(f"{self._label()}.task_losses: {what} must be a dict with one entry per task "
                                 f"{list(self.tasks)}, got {keys}")
        losses = {}
        for task in self.tasks:
            pred, y = as_tensor(outputs[task]), as_tensor(targets[task])
            if tuple(y.shape) != tuple(pred.shape):
                raise ShapeError(f"{self._label()}.task_losses: task {task!r} targets must have shape "
                                 f"{tuple(pred.shape)}, got {tuple(y.shape)}")
            y = y.astype(pred.dtype) if hasattr(y, "astype") else y
            if self.task_types[task] == "binary":
                losses[task] = F.binary_cross_entropy(pred, y, from_logits=True)
            else:
                losses[task] = F.mean((pred - y) ** 2)
        return losses

    def loss(self, outputs: Mapping, targets: Mapping, weights: Mapping | None = None) -> Tensor:
        """sum_k w_k L_k over :meth:`task_losses` (w_k = 1 for a task ``weights`` does not name)."""
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"{self._label()}.loss: weights name unknown tasks {unknown}; tasks: {list(self.tasks)}")
        losses = self.task_losses(outputs, targets)
        total = None
        for task in self.tasks:
            term = float(weights.get(task, 1.0)) * losses[task]
            total = term if total is None else total + term
        return total


@register_with_arguments
class SharedBottom(_MultiTaskRecommender):
    """(field ids (B, F), dense (B, num_dense) or None) -> {task: (B,)}: one ReLU MLP of
    ``bottom_units`` shared by the tasks, then a tower per task (module docstring)."""

    def __init__(self, field_dims, tasks=("ctr", "cvr"), bottom_units=(32,), tower_units=(8,), embed_dim: int = 8,
                 num_dense: int = 0, task_types=None, name: str | None = None):
        super().__init__(name=name)
        width = self._setup(field_dims, tasks, tower_units, embed_dim, num_dense, task_types)
        self.bottom_units = tuple(bottom_units)
        self.bottom = _mlp(width, self.bottom_units, "relu", "SharedBottom")
        self._towers(self.bottom_units[-1] if self.bottom_units else width)
        self.built = True

    def forward(self, ids, dense=None) -> dict[str, Tensor]:
        h = self.bottom(self._features(ids, dense))
        return self._heads([h] * len(self.tasks))


@register_with_arguments
class MMoE(_MultiTaskRecommender):
    """(field ids (B, F), dense (B, num_dense) or None) -> {task: (B,)}: ``num_experts`` ReLU
    experts of widths ``expert_units``, one softmax gate per task (weights ``gates`` (K, D, n),
    no bias, as the paper), a tower per task. ``return_gates=True`` also returns
    {task: gate weights (B, n)}."""

    def __init__(self, field_dims, tasks=("ctr", "cvr"), num_experts: int = 4, expert_units=(16,),
                 tower_units=(8,), embed_dim: int = 8, num_dense: int = 0, task_types=None, name: str | None = None):
        super().__init__(name=name)
        width = self._setup(field_dims, tasks, tower_units, embed_dim, num_dense, task_types)
        self.num_experts = positive_int(num_experts, "MMoE: num_experts")
        self.expert_units = tuple(expert_units)
        self.experts = ExpertGroup(num_experts, width, self.expert_units)
        glorot = initializers.get("glorot_uniform")
        self.add_parameter("gates", glorot((len(self.tasks), width, num_experts), width, num_experts,
                                           backend.get_default_dtype()))
        self._towers(self.expert_units[-1])
        self.built = True

    def forward(self, ids, dense=None, return_gates: bool = False):
        x = self._features(ids, dense)
        experts = self.experts(x)                                               # (B, n, d)
        gate_logits = F.einsum("bd,kdn->kbn", x, self.gates)
        mixed = [_mix(gate_logits[k], experts) for k in range(len(self.tasks))]
        outputs = self._heads([h for _, h in mixed])
        if return_gates:
            return outputs, {task: g for task, (g, _) in zip(self.tasks, mixed)}
        return outputs


@register_with_arguments
class PLE(_MultiTaskRecommender):
    """(field ids (B, F), dense (B, num_dense) or None) -> {task: (B,)}: progressive layered
    extraction (module docstring), ``num_levels`` levels of ``task_experts`` experts per task
    and ``shared_experts`` shared ones, all ReLU MLPs of ``expert_units``. Gate weights
    ``gate{j}_{k}`` (d_in, own + shared) for task k at level j and ``gate{j}_shared``
    (d_in, all experts) at levels before the last, no bias. ``return_gates=True`` also returns
    a list over levels of {task: (B, task_experts + shared_experts)}, with "shared":
    (B, K task_experts + shared_experts) at levels before the last."""

    def __init__(self, field_dims, tasks=("ctr", "cvr"), num_levels: int = 1, shared_experts: int = 2,
                 task_experts: int = 1, expert_units=(16,), tower_units=(8,), embed_dim: int = 8, num_dense: int = 0,
                 task_types=None, name: str | None = None):
        super().__init__(name=name)
        width = self._setup(field_dims, tasks, tower_units, embed_dim, num_dense, task_types)
        if "shared" in self.tasks:
            raise ValueError("PLE: 'shared' names the shared gate; give the task another name")
        self.num_levels = positive_int(num_levels, "PLE: num_levels")
        for what, n in (("shared_experts", shared_experts), ("task_experts", task_experts)):
            if int(n) != n or n < 0:
                raise ValueError(f"PLE: {what} must be an integer >= 0, got {n!r}")
        if shared_experts + task_experts == 0:
            raise ValueError("PLE: a gate needs at least one expert; shared_experts and task_experts are both 0")
        self.shared_experts, self.task_experts = int(shared_experts), int(task_experts)
        self.expert_units = tuple(expert_units)
        dtype, glorot = backend.get_default_dtype(), initializers.get("glorot_uniform")
        per_task, everyone = self.task_experts + self.shared_experts, \
            len(self.tasks) * self.task_experts + self.shared_experts
        self.task_groups, self.shared_groups = ModuleList(), ModuleList()
        for j in range(self.num_levels):
            d_in = width if j == 0 else self.expert_units[-1]
            for k in range(len(self.tasks)):
                if self.task_experts:
                    self.task_groups.append(ExpertGroup(self.task_experts, d_in, self.expert_units))
                self.add_parameter(f"gate{j}_{k}", glorot((d_in, per_task), d_in, per_task, dtype))
            if self.shared_experts:
                self.shared_groups.append(ExpertGroup(self.shared_experts, d_in, self.expert_units))
            if j < self.num_levels - 1:
                self.add_parameter(f"gate{j}_shared", glorot((d_in, everyone), d_in, everyone, dtype))
        self._towers(self.expert_units[-1])
        self.built = True

    def forward(self, ids, dense=None, return_gates: bool = False):
        x = self._features(ids, dense)
        num_tasks = len(self.tasks)
        inputs, shared_input, all_gates = [x] * num_tasks, x, []
        for j in range(self.num_levels):
            own = [self.task_groups[j * num_tasks + k](inputs[k]) for k in range(num_tasks)] \
                if self.task_experts else [None] * num_tasks
            shared = self.shared_groups[j](shared_input) if self.shared_experts else None
            gates, outputs = {}, []
            for k, task in enumerate(self.tasks):
                pool = F.concat([e for e in (own[k], shared) if e is not None], axis=1)
                gates[task], q = _mix(F.matmul(inputs[k], getattr(self, f"gate{j}_{k}")), pool)
                outputs.append(q)
            if j < self.num_levels - 1:
                pool = F.concat([e for e in (*own, shared) if e is not None], axis=1)
                gates["shared"], shared_input = _mix(F.matmul(shared_input, getattr(self, f"gate{j}_shared")), pool)
            inputs = outputs
            all_gates.append(gates)
        outputs = self._heads(inputs)
        return (outputs, all_gates) if return_gates else outputs
