"""Hypernetworks (Ha et al. 2017): a small network that generates another network's weights.

The target's parameters are flattened into one vector theta of length P and cut into
n = ceil(P / chunk_size) chunks. Chunk j has a learned embedding z_j; a shared generator maps
it (and, for a conditional hypernetwork, a task vector e) to the chunk's values:

    theta_j = g([z_j, e]),   g(u) = tanh(u W1 + b1) W2 + b2   (or u W + b without a hidden layer)
    theta = concat(theta_1, ..., theta_n)[:P]

and the target runs with theta in place of its own parameters (``functional_call``), so the
loss gradients reach only the generator, the chunk embeddings and the task embeddings.

* static: no task vector; one set of weights, usually with far fewer trainable numbers than P.
* conditional (von Oswald et al. 2020): ``num_tasks`` learned task embeddings (``task_dim``
  wide), or a task vector given at each call (``condition_dim``); each task gets its own
  generated weights, as for multi-task or continual learning.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import concat
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.functional_call import functional_call
from lamina.nn.layer import build_for_shape, input_shape_config, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor


def _positive(what: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"HyperNetwork: {what} must be a positive int, got {value!r}")
    return value


@register_layer
class HyperNetwork(Module):
    """Generate the parameters of the built module ``target`` and run it with them:
    ``hyper(*inputs, task=...)`` equals ``target(*inputs)`` with the generated parameters.

    ``target`` is kept outside this module's registry (its own parameters are not trained).
    ``num_tasks`` (learned task embeddings, ``task`` an int id) and ``condition_dim`` (``task``
    a given vector) make it conditional; at most one of them.
    """

    def __init__(self, target: Module, embedding_dim: int = 8, chunk_size: int = 64, hidden: int | None = None,
                 num_tasks: int | None = None, task_dim: int = 8, condition_dim: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        if not isinstance(target, Module) or not target.built:
            raise ValueError("HyperNetwork: target must be a built Module (call it once first)")
        if num_tasks is not None and condition_dim is not None:
            raise ValueError("HyperNetwork: give num_tasks (learned task embeddings) or condition_dim (given task "
                             "vectors), not both")
        object.__setattr__(self, "target", target)
        self.embedding_dim = _positive("embedding_dim", embedding_dim)
        self.chunk_size = _positive("chunk_size", chunk_size)
        self.hidden = _positive("hidden", hidden, allow_none=True)
        self.num_tasks = _positive("num_tasks", num_tasks, allow_none=True)
        self.condition_dim = _positive("condition_dim", condition_dim, allow_none=True)
        named = [(n, p) for n, p in target.named_parameters()]
        self.target_names = [n for n, _ in named]
        self.target_shapes = [tuple(p.shape) for _, p in named]
        self.target_size = sum(math.prod(s) for s in self.target_shapes)
        self.num_chunks = math.ceil(self.target_size / self.chunk_size)
        self.task_dim = _positive("task_dim", task_dim)
        self._create_parameters(self.task_dim)
        self.built = True

    def _create_parameters(self, task_dim: int) -> None:
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("chunk_embeddings", xp.asarray(
            backend.rng().standard_normal((self.num_chunks, self.embedding_dim)), dtype=dtype))
        width = self.embedding_dim
        if self.num_tasks is not None:
            self.add_parameter("task_embeddings", xp.asarray(
                backend.rng().standard_normal((self.num_tasks, task_dim)), dtype=dtype))
            width += task_dim
        elif self.condition_dim is not None:
            width += self.condition_dim
        glorot = initializers.get("xavier_uniform")
        sizes = [width] + ([self.hidden] if self.hidden else []) + [self.chunk_size]
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.add_parameter(f"generator_weight{k}", glorot((a, b), a, b, dtype))
            self.add_parameter(f"generator_bias{k}", xp.zeros((b,), dtype=dtype))

    @property
    def conditional(self) -> bool:
        return self.num_tasks is not None or self.condition_dim is not None

    def _task_vector(self, task) -> Tensor | None:
        if not self.conditional:
            if task is not None:
                raise ValueError("HyperNetwork: this hypernetwork is static; it takes no task")
            return None
        if task is None:
            raise ValueError("HyperNetwork: this hypernetwork is conditional; pass task=")
        if self.num_tasks is not None:
            if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.num_tasks:
                raise ValueError(f"HyperNetwork: task must be an int id in [0, {self.num_tasks}), got {task!r}")
            return self.task_embeddings[task]
        task = as_tensor(task)
        if task.shape != (self.condition_dim,):
            raise ShapeError(f"HyperNetwork: the task vector must have shape ({self.condition_dim},), got {task.shape}")
        return task

    def generate(self, task=None) -> dict[str, Tensor]:
        """The target's parameters (name -> tensor) for ``task`` (None when static)."""
        inputs = self.chunk_embeddings
        vector = self._task_vector(task)
        if vector is not None:
            ones = Tensor._wrap(backend.xp.ones((self.num_chunks, 1), dtype=inputs.dtype))
            inputs = concat([inputs, ones @ vector.reshape((1, -1))], axis=1)
        layers = 2 if self.hidden else 1
        h = inputs
        for k in range(layers):
            h = linear(h, getattr(self, f"generator_weight{k}"), getattr(self, f"generator_bias{k}"))
            if k < layers - 1:
                h = h.tanh()
        flat = h.reshape((-1,))
        values, start = {}, 0
        for name, shape in zip(self.target_names, self.target_shapes):
            size = math.prod(shape)
            values[name] = flat[start:start + size].reshape(shape)
            start += size
        return values

    def forward(self, *inputs, task=None):
        return functional_call(self.target, self.generate(task), *inputs)

    def train(self, mode: bool = True) -> HyperNetwork:
        """Set the mode here and on the target (kept outside the registry)."""
        self.target.train(mode)
        return super().train(mode)

    def parameter_counts(self) -> dict[str, int]:
        """{'target': P, 'hypernetwork': trainable numbers here, 'generated_per_call': n * chunk_size}."""
        own = sum(int(p.data.size) for p in self.parameters())
        return {"target": self.target_size, "hypernetwork": own,
                "generated_per_call": self.num_chunks * self.chunk_size}

    def get_config(self) -> dict:
        """The generator's arguments and the target's config with the input shape(s) it was built
        for (None: built at construction)."""
        return {"target": layer_to_config(self.target), "target_input_shape": input_shape_config(self.target),
                "embedding_dim": self.embedding_dim, "chunk_size": self.chunk_size, "hidden": self.hidden,
                "num_tasks": self.num_tasks, "task_dim": self.task_dim, "condition_dim": self.condition_dim,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> HyperNetwork:
        """The target is rebuilt and built by a call on zeros of its input shape(s) (its own
        weights do not matter: the hypernetwork generates them)."""
        config = dict(config)
        target = build_for_shape(layer_from_config(config.pop("target")), config.pop("target_input_shape"))
        return cls(target, **config)

    def extra_repr(self) -> str:
        kind = "conditional" if self.conditional else "static"
        return (f"{kind}, target parameters={self.target_size}, chunks={self.num_chunks}x{self.chunk_size}, "
                f"embedding_dim={self.embedding_dim}")
