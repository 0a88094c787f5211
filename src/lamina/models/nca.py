"""Neural cellular automata (Mordvintsev et al. 2020, "Growing Neural Cellular Automata";
Randazzo et al. 2020, "Self-classifying MNIST Digits").

A state is an NHWC grid of cells (N, H, W, C); channels 0..2 are RGB, channel 3 is alpha
("alive") and the rest are hidden. One step:

    p      = [x, K_x * x, K_y * x (, K_lap * x)]       fixed depthwise filters per channel
    dx     = W_2 relu(W_1 p + b_1)                      1x1 convolutions, W_2 zero at start
    x'     = x + m dx,  m ~ Bernoulli(fire_rate)        one mask value per cell
    alive  = maxpool3x3(alpha) > alive_threshold, before and after the update
    x_next = x' * (alive_before and alive_after)

with K_x = [1, 2, 1]^T [-1, 0, 1] / 8 (Sobel), K_y = K_x^T and K_lap = [[1, 2, 1], [2, -12, 2],
[1, 2, 1]] / 16. :func:`train_nca` grows a target image from one seed cell with the article's
sample pool and damage; :class:`SelfClassifyingCA` lets the cells of a digit agree on its class.

:func:`soft_life_step` is Conway's Game of Life made differentiable: with n the sum of the 8
neighbours and s(z) = sigmoid(k z),

    next = a s(n - 1.5) s(3.5 - n) + (1 - a) s(n - 2.5) s(3.5 - n),

which for a 0/1 grid a and a steep k rounds to the rule (survive on 2 or 3, birth on 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["NCATrainResult", "NeuralCA", "SelfClassifyingCA", "circle_damage_masks", "nca_perception_kernels",
           "normalize_gradients", "soft_life_step", "train_nca", "train_self_classifying_ca"]

SOBEL_X = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]) / 8.0
LAPLACIAN = np.array([[1.0, 2.0, 1.0], [2.0, -12.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
PADDING_MODES = ("zeros", "circular")


def nca_perception_kernels(channels: int, laplacian: bool = False, dtype=np.float32) -> np.ndarray:
    """Depthwise weights (channels * m, 3, 3, 1) for identity, Sobel-x, Sobel-y (and Laplacian)
    filters, m = 3 (or 4); output channel c * m + j is filter j applied to input channel c."""
    identity = np.zeros((3, 3))
    identity[1, 1] = 1.0
    filters = [identity, SOBEL_X, SOBEL_X.T] + ([LAPLACIAN] if laplacian else [])
    stacked = np.stack(filters)                                   # (m, 3, 3)
    return np.tile(stacked, (channels, 1, 1))[..., None].astype(dtype)


def _as_tensor(x, dtype=None) -> Tensor:
    """A Tensor of x; arrays keep a floating dtype of their own."""
    if isinstance(x, Tensor):
        return x
    x = backend.xp.asarray(x)
    return Tensor(x, dtype=x.dtype if x.dtype.kind == "f" else dtype)


@register_with_arguments
class NeuralCA(Module):
    """The growing NCA: ``channels`` state channels (RGBA first), an update MLP with ``hidden``
    units, stochastic updates with ``fire_rate`` and alive masking at ``alive_threshold``.

    padding: 'zeros' (the article's SAME convolution) or 'circular' (a torus)."""

    def __init__(self, channels: int = 16, hidden: int = 128, fire_rate: float = 0.5, alive_threshold: float = 0.1,
                 laplacian: bool = False, padding: str = "zeros", seed: int | None = None, name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(channels, int) and channels >= 4):
            raise ValueError(f"NeuralCA: channels must be an int >= 4 (RGBA + hidden), got {channels!r}")
        if not (isinstance(hidden, int) and hidden >= 1):
            raise ValueError(f"NeuralCA: hidden must be a positive int, got {hidden!r}")
        if not 0.0 < fire_rate <= 1.0:
            raise ValueError(f"NeuralCA: fire_rate must be in (0, 1], got {fire_rate!r}")
        if padding not in PADDING_MODES:
            raise ValueError(f"NeuralCA: padding must be one of {PADDING_MODES}, got {padding!r}")
        self.channels, self.hidden = channels, hidden
        self.fire_rate, self.alive_threshold = float(fire_rate), float(alive_threshold)
        self.laplacian, self.padding = laplacian, padding
        dtype = backend.get_default_dtype()
        self.kernels = nca_perception_kernels(channels, laplacian, dtype)
        perception = self.kernels.shape[0]
        rng = np.random.default_rng(seed)
        limit = np.sqrt(6.0 / (perception + hidden))              # Glorot uniform, as Keras's Conv2D
        self.add_parameter("w1", backend.xp.asarray(rng.uniform(-limit, limit, (hidden, 1, 1, perception))
                                                    .astype(dtype)))
        self.add_parameter("b1", backend.xp.zeros(hidden, dtype=dtype))
        self.add_parameter("w2", backend.xp.zeros((channels, 1, 1, hidden), dtype=dtype))

    def _check(self, state, op: str) -> Tensor:
        state = _as_tensor(state, backend.get_default_dtype())
        if state.ndim != 4 or state.shape[-1] != self.channels:
            raise ShapeError(f"{self._label()}.{op}: state must be (N, H, W, {self.channels}), got "
                             f"{tuple(state.shape)}")
        return state

    def seed_state(self, h: int, w: int, n: int = 1) -> np.ndarray:
        """n grids (n, h, w, channels) of zeros with one live cell at the centre (alpha and hidden = 1)."""
        state = np.zeros((n, h, w, self.channels), dtype=backend.get_default_dtype())
        state[:, h // 2, w // 2, 3:] = 1.0
        return state

    def perceive(self, state) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C * m): identity and gradient filters on every channel."""
        x = self._check(state, "perceive")
        kernels = self.kernels.astype(x.dtype)
        if self.padding == "circular":
            return F.conv2d(F.pad2d(x, 1, mode="circular"), kernels, groups=self.channels)
        return F.conv2d(x, kernels, padding=1, groups=self.channels)

    def update_delta(self, state) -> Tensor:
        """dx = W_2 relu(W_1 perceive(state) + b_1), per cell."""
        hidden = F.relu(F.conv2d(self.perceive(state), self.w1, self.b1))
        return F.conv2d(hidden, self.w2)

    def alive_mask(self, state) -> np.ndarray:
        """(N, H, W, 1) booleans: some cell in the 3x3 neighbourhood has alpha > alive_threshold."""
        alpha = _as_tensor(state)[..., 3:4]
        with no_grad():
            pooled = F.max_pool2d(alpha.detach(), 3, stride=1, padding=1).numpy()
        return pooled > self.alive_threshold

    def fire_mask(self, shape, rng: np.random.Generator | None = None) -> np.ndarray:
        """(N, H, W, 1) booleans, each cell True with probability fire_rate."""
        rng = backend.rng() if rng is None else rng
        return rng.random((*shape[:3], 1)) < self.fire_rate

    def update(self, state, fire_mask=None, rng: np.random.Generator | None = None) -> Tensor:
        """One step of the automaton (module docstring); ``fire_mask`` (N, H, W, 1) fixes the random cells."""
        x = self._check(state, "update")
        mask = self.fire_mask(x.shape, rng) if fire_mask is None else np.asarray(fire_mask)
        if mask.shape != (*x.shape[:3], 1):
            raise ShapeError(f"{self._label()}.update: fire_mask must be {(*x.shape[:3], 1)}, got {mask.shape}")
        before = self.alive_mask(x)
        updated = x + self.update_delta(x) * Tensor(backend.xp.asarray(mask), dtype=x.dtype)
        alive = before & self.alive_mask(updated)
        return updated * Tensor(backend.xp.asarray(alive), dtype=x.dtype)

    def step(self, state, steps: int = 1, rng: np.random.Generator | None = None) -> Tensor:
        """Run ``steps`` updates from ``state``."""
        x = self._check(state, "step")
        for _ in range(steps):
            x = self.update(x, rng=rng)
        return x

    def forward(self, state, steps: int = 1) -> Tensor:
        return self.step(state, steps)


def soft_life_step(grid, steepness: float = 10.0, padding: str = "circular") -> Tensor:
    """One differentiable Game-of-Life step (module docstring) of grids (N, H, W, 1) in [0, 1];
    ``padding`` 'circular' (a torus) or 'zeros' (dead cells outside)."""
    a = _as_tensor(grid, backend.get_default_dtype())
    if a.ndim != 4 or a.shape[-1] != 1:
        raise ShapeError(f"soft_life_step: grid must be (N, H, W, 1), got {tuple(a.shape)}")
    if padding not in PADDING_MODES:
        raise ValueError(f"soft_life_step: padding must be one of {PADDING_MODES}, got {padding!r}")
    ring = np.ones((1, 3, 3, 1), dtype=a.dtype)
    ring[0, 1, 1, 0] = 0.0
    if padding == "circular":
        n = F.conv2d(F.pad2d(a, 1, mode="circular"), ring)
    else:
        n = F.conv2d(a, ring, padding=1)

    def s(z):
        return F.sigmoid(z * steepness)

    crowded = s(3.5 - n)
    return a * s(n - 1.5) * crowded + (1.0 - a) * s(n - 2.5) * crowded


def normalize_gradients(params, eps: float = 1e-8) -> None:
    """g <- g / (||g|| + eps) for each parameter's gradient, in place (the article's normalisation)."""
    for p in params:
        if p.grad is not None:
            grad = p.grad.numpy() if isinstance(p.grad, Tensor) else p.grad
            scaled = grad / (float(np.sqrt((np.asarray(grad, dtype=np.float64) ** 2).sum())) + eps)
            p.grad = Tensor(scaled, dtype=p.dtype) if isinstance(p.grad, Tensor) else scaled.astype(p.dtype)


def circle_damage_masks(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(n, h, w, 1) masks, 0 inside a random circle (centre in the middle half of the grid,
    radius 0.1 to 0.4 of the half-size, in [-1, 1] coordinates) and 1 elsewhere."""
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
    centres = rng.uniform(-0.5, 0.5, (n, 2, 1, 1))
    radii = rng.uniform(0.1, 0.4, (n, 1, 1))
    inside = (ys - centres[:, 0]) ** 2 + (xs - centres[:, 1]) ** 2 < radii ** 2
    return (~inside)[..., None].astype(backend.get_default_dtype())


@dataclass
class NCATrainResult:
    """What :func:`train_nca` returns: the model, the mean loss of each iteration and the pool."""

    model: NeuralCA
    losses: list[float]
    pool: np.ndarray


def _per_sample_rgba_loss(state: Tensor, target: Tensor) -> Tensor:
    return F.mean((state[..., :4] - target) ** 2, axis=(1, 2, 3))


def train_nca(target_rgba, steps: int, pool_size: int = 1024, batch: int = 8, rollout: tuple[int, int] = (64, 96),
              lr: float = 2e-3, damage: int = 0, model: NeuralCA | None = None, seed: int | None = None,
              **model_options) -> NCATrainResult:
    """Grow ``target_rgba`` (H, W, 4), values in [0, 1], from one seed cell with the sample pool.

    Each of ``steps`` iterations draws ``batch`` pool states, puts the seed in place of the one
    with the worst loss, erases a circle in the ``damage`` best ones, runs a random number of CA
    steps in ``rollout`` and minimises mean((RGBA - target)^2) with Adam on gradients normalised
    per parameter; the results go back into the pool."""
    from lamina.optim import Adam  # same rank as models: imported when used

    target = np.asarray(target_rgba, dtype=backend.get_default_dtype())
    if target.ndim != 3 or target.shape[-1] != 4:
        raise ShapeError(f"train_nca: target_rgba must be (H, W, 4), got {target.shape}")
    if not 0 <= damage < batch:
        raise ValueError(f"train_nca: damage must be in [0, batch = {batch}), got {damage!r}")
    rng = np.random.default_rng(seed)
    model = NeuralCA(seed=seed, **model_options) if model is None else model
    h, w = target.shape[:2]
    seed_cell = model.seed_state(h, w)[0]
    pool = np.repeat(seed_cell[None], pool_size, axis=0)
    optimizer = Adam(model.parameters(), lr=lr)
    target_tensor = Tensor(backend.xp.asarray(target), dtype=target.dtype)
    losses = []
    for _ in range(steps):
        rows = rng.choice(pool_size, batch, replace=False)
        with no_grad():
            start_losses = _per_sample_rgba_loss(Tensor(pool[rows]), target_tensor).numpy()
        rows = rows[np.argsort(-start_losses)]                    # worst first
        start = pool[rows].copy()
        start[0] = seed_cell
        if damage:
            start[-damage:] *= circle_damage_masks(damage, h, w, rng)
        optimizer.zero_grad()
        state = model.step(start, int(rng.integers(rollout[0], rollout[1] + 1)), rng=rng)
        loss = F.mean(_per_sample_rgba_loss(state, target_tensor))
        loss.backward()
        normalize_gradients(model.parameters())
        optimizer.step()
        pool[rows] = state.numpy()
        losses.append(float(loss.numpy()))
    return NCATrainResult(model, losses, pool)


@register_with_arguments
class SelfClassifyingCA(NeuralCA):
    """Cells on a digit agree on its class: channel 0 holds the (fixed) image, channels
    1..n_classes the per-cell class logits, the rest are hidden. A cell is alive where the image
    exceeds ``alive_threshold``; dead cells stay zero. The loss is the cross-entropy of each
    alive cell's logits against the image's label, averaged over alive cells."""

    def __init__(self, n_classes: int = 10, hidden_channels: int = 9, hidden: int = 80, fire_rate: float = 0.5,
                 alive_threshold: float = 0.1, seed: int | None = None, name: str | None = None):
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"SelfClassifyingCA: n_classes must be an int >= 2, got {n_classes!r}")
        super().__init__(1 + n_classes + hidden_channels, hidden, fire_rate, alive_threshold, seed=seed, name=name)
        self.n_classes = n_classes

    def seed_state(self, images, w: int | None = None, n: int = 1) -> np.ndarray:  # type: ignore[override]
        """States (N, H, W, C) for images (N, H, W) in [0, 1]: the image in channel 0, zeros elsewhere."""
        images = np.asarray(images, dtype=backend.get_default_dtype())
        if images.ndim != 3:
            raise ShapeError(f"{self._label()}.seed_state: images must be (N, H, W), got {images.shape}")
        state = np.zeros((*images.shape, self.channels), dtype=images.dtype)
        state[..., 0] = images
        return state

    def alive_mask(self, state) -> np.ndarray:
        """(N, H, W, 1): the cells whose image value exceeds alive_threshold."""
        image = _as_tensor(state)[..., 0:1]
        return image.detach().numpy() > self.alive_threshold

    def update(self, state, fire_mask=None, rng: np.random.Generator | None = None) -> Tensor:
        """x' = (x + m dx) on alive cells, the image channel never changing."""
        x = self._check(state, "update")
        mask = self.fire_mask(x.shape, rng) if fire_mask is None else np.asarray(fire_mask)
        if mask.shape != (*x.shape[:3], 1):
            raise ShapeError(f"{self._label()}.update: fire_mask must be {(*x.shape[:3], 1)}, got {mask.shape}")
        frozen = np.ones(self.channels, dtype=bool)
        frozen[0] = False
        cells = Tensor(backend.xp.asarray(mask & self.alive_mask(x) & frozen), dtype=x.dtype)
        return x + self.update_delta(x) * cells

    def logits(self, state) -> Tensor:
        """(N, H, W, n_classes) per-cell class logits."""
        return _as_tensor(state)[..., 1:1 + self.n_classes]

    def loss(self, state, labels) -> Tensor:
        """Mean over alive cells of -log softmax(logits)[label of the cell's image]."""
        x = self._check(state, "loss")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape != (x.shape[0],):
            raise ShapeError(f"{self._label()}.loss: labels must be ({x.shape[0]},), got {labels.shape}")
        alive = self.alive_mask(x)
        onehot = np.eye(self.n_classes, dtype=x.dtype)[labels][:, None, None, :] * alive
        log_p = F.log_softmax(self.logits(x), axis=-1)
        return -F.sum(log_p * Tensor(backend.xp.asarray(onehot), dtype=x.dtype)) / max(int(alive.sum()), 1)

    def cell_accuracy(self, state, labels) -> float:
        """Fraction of alive cells whose argmax logit is their image's label."""
        x = self._check(state, "cell_accuracy")
        alive = self.alive_mask(x)[..., 0]
        guess = self.logits(x).detach().numpy().argmax(-1)
        right = (guess == np.asarray(labels).reshape(-1, 1, 1)) & alive
        return float(right.sum() / max(alive.sum(), 1))


def train_self_classifying_ca(images, labels, iterations: int, ca_steps: tuple[int, int] = (10, 20),
                              lr: float = 2e-3, model: SelfClassifyingCA | None = None, seed: int | None = None,
                              **model_options) -> tuple[SelfClassifyingCA, list[float]]:
    """Train on images (N, H, W) in [0, 1] and labels (N,): each iteration runs a random number
    of steps in ``ca_steps`` from the images' seed states and takes an Adam step on the per-cell
    cross-entropy (gradients normalised per parameter). Returns the model and the losses."""
    from lamina.optim import Adam  # same rank as models: imported when used

    rng = np.random.default_rng(seed)
    model = SelfClassifyingCA(seed=seed, **model_options) if model is None else model
    start = model.seed_state(images)
    optimizer = Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        state = model.step(start, int(rng.integers(ca_steps[0], ca_steps[1] + 1)), rng=rng)
        loss = model.loss(state, labels)
        loss.backward()
        normalize_gradients(model.parameters())
        optimizer.step()
        losses.append(float(loss.numpy()))
    return model, losses
