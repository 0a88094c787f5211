"""Self-supervised training with two branches: MoCo v2 and v3, BYOL and SimSiam (a target
branch that gets no gradient), and SwAV (online clustering), plus the monitors that tell
learning from collapse.

Every trainer runs the same step on an unlabelled batch x:

    views   = augment(x) twice (or the list a multi-crop ``augment`` returns, for SwAV)
    loss    = the method's loss of the online branch's outputs and the target branch's
    online  <- optimizer step on dloss/dtheta
    target  <- tau theta_t + (1 - tau) theta   (MoCo, BYOL: the momentum update)

with online = predictor(projector(encoder(view))) (MoCo v3, BYOL, SimSiam) or
projector(encoder(view)) (MoCo v2, SwAV), and target a copy of encoder + projector, frozen
and moved only by :func:`momentum_update`. BYOL and MoCo v3 raise tau from its base to 1
along :func:`momentum_schedule` over all steps; MoCo v2 keeps it fixed (0.999).

Batch normalisation: the target runs in training mode on the batch of keys, as the
references' key encoders do; its running statistics are its own (only parameters are
averaged). MoCo's shuffling BN exists to stop the per-GPU statistics leaking which key
matches which query; on one process every layer sees the whole batch, shuffling changes
nothing, and lamina does not shuffle.

Monitors (per epoch, in the history): ``embedding_std``, the standard deviation over the
batch of the unit-length projections averaged over dimensions (:func:`embedding_std`;
about 1 / sqrt(D) when the outputs spread over the sphere, 0 when they collapse, as in
SimSiam's Figure 2), and with ``fit(..., knn=...)`` the weighted k-NN accuracy of the
encoder's features (:func:`knn_accuracy`).
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.projection import projection_head
from lamina.models.self_supervised import MoCoQueue, SwAVPrototypes
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.optim import Adam
from lamina.train.contrastive import encode

__all__ = ["BYOLTrainer", "MoCoV2Trainer", "MoCoV3Trainer", "SiameseTrainer", "SimSiamTrainer", "SwAVTrainer",
           "embedding_std", "knn_accuracy", "momentum_schedule", "momentum_update"]


def _momentum(value, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{fn}: momentum must be a number in [0, 1], got {value!r}")
    return float(value)


def momentum_update(target: Module, online: Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta for each parameter of ``target`` and the
    matching one of ``online`` (same structure), in place; buffers are left alone."""
    m = _momentum(momentum, "momentum_update")
    pairs = list(zip(target.named_parameters(), online.named_parameters(), strict=False))
    if len(pairs) != len(online.parameters()) or len(pairs) != len(target.parameters()) \
            or any(a.data.shape != b.data.shape for (_, a), (_, b) in pairs):
        raise ShapeError("momentum_update: target and online networks must have the same parameters (names and "
                         f"shapes); got {len(target.parameters())} and {len(online.parameters())} parameters")
    for (_, t), (_, s) in pairs:
        t.data[...] = m * t.data + (1.0 - m) * s.data


def momentum_schedule(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's cosine schedule (also MoCo v3's) of the target's momentum:
    tau_k = 1 - (1 - base) (cos(pi k / K) + 1) / 2, from ``base`` at k = 0 to 1 at k = K."""
    base = _momentum(base, "momentum_schedule")
    total_steps = positive_int(total_steps, "momentum_schedule: total_steps")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step <= total_steps:
        raise ValueError(f"momentum_schedule: step must be an int in [0, total_steps={total_steps}], got {step!r}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def embedding_std(z) -> float:
    """Collapse check (SimSiam, Chen and He 2021): the rows of ``z`` (N, D) scaled to unit
    length, the standard deviation of each dimension over the batch, averaged over the D
    dimensions. 0 for collapsed outputs (every row the same), about 1 / sqrt(D) for
    outputs spread over the sphere."""
    values = z.data if isinstance(z, Tensor) else np.asarray(z)
    if values.ndim != 2 or len(values) < 2:
        raise ShapeError(f"embedding_std: z must be at least 2 embeddings of shape (N, D), got shape {values.shape}")
    unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    return float(unit.std(axis=0).mean())


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20,
                 temperature: float = 0.07) -> float:
    """The weighted k-nearest-neighbour classifier of self-supervised monitoring (Wu et al.
    2018; DINO's ``eval_knn``): features scaled to unit length, each test sample's k most
    cosine-similar training samples vote for their label with weight exp(s / temperature);
    the label with the largest total wins. Returns the test accuracy."""
    fn = "knn_accuracy"
    bank, query = np.asarray(train_features, dtype=np.float64), np.asarray(test_features, dtype=np.float64)
    labels, truth = np.asarray(train_labels).astype(np.int64), np.asarray(test_labels).astype(np.int64)
    if bank.ndim != 2 or query.ndim != 2 or bank.shape[1] != query.shape[1]:
        raise ShapeError(f"{fn}: features must be (N, D) and (M, D), got shapes {bank.shape} and {query.shape}")
    if len(labels) != len(bank) or len(truth) != len(query):
        raise ShapeError(f"{fn}: {len(bank)} training and {len(query)} test features but {len(labels)} and "
                         f"{len(truth)} labels")
    k = positive_int(k, f"{fn}: k")
    if k > len(bank):
        raise ValueError(f"{fn}: k={k} exceeds the {len(bank)} training samples")
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"{fn}: temperature must be a number > 0, got {temperature!r}")
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    similarity = query @ bank.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
    votes = np.zeros((len(query), int(labels.max()) + 1))
    np.add.at(votes, (np.arange(len(query))[:, None], labels[nearest]), weights)
    return float((votes.argmax(axis=1) == truth).mean())


def _rows(features: Tensor) -> Tensor:
    return features if features.ndim == 2 else F.reshape(features, features.shape[0], -1)


def _positive_number(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{fn}: {name} must be a number > 0, got {value!r}")
    return float(value)


class SiameseTrainer:
    """The shared loop (module docstring). ``encoder`` maps a batch to features (feature maps
    are flattened); ``augment`` a random layer (called twice per batch) or one returning the
    list of views; ``projector`` defaults to :func:`lamina.models.projection_head` (128 out,
    512 hidden); ``optimizer`` a function of the parameter list, by default Adam(``lr``,
    ``weight_decay``). :attr:`online` holds the trained modules; :attr:`target` the momentum
    copy (methods with one). Subclasses define :meth:`loss`."""

    name = "SiameseTrainer"
    uses_predictor = False
    uses_target = False
    schedules_momentum = False

    def __init__(self, encoder: Module, augment, projector: Module | None = None, predictor: Module | None = None,
                 momentum: float = 0.996, lr: float = 1e-3, weight_decay: float = 0.0, optimizer=None):
        if not callable(augment):
            raise TypeError(f"{self.name}: augment must be a layer or a function of a batch, got {augment!r}")
        self.encoder, self.augment = encoder, augment
        self.projector = projection_head() if projector is None else projector
        self.predictor = predictor
        self.base_momentum = _momentum(momentum, self.name)
        self.make_optimizer = optimizer or (lambda params: Adam(params, lr=lr, weight_decay=weight_decay))
        self.optimizer = None
        self.target: dict[str, Module] | None = None
        self.step, self.total_steps = 0, None

    # -- networks ------------------------------------------------------------
    def project(self, view: Tensor) -> Tensor:
        """projector(encoder(view)): the online branch up to the projection."""
        return self.projector(_rows(self.encoder(view)))

    def target_project(self, view: Tensor) -> Tensor:
        """The momentum copy's projection, no graph."""
        with no_grad():
            return self.target["projector"](_rows(self.target["encoder"](view)))

    def online_modules(self) -> list[Module]:
        return [self.encoder, self.projector] + ([self.predictor] if self.uses_predictor else [])

    def _start(self, view: Tensor) -> None:
        """Build the networks on a first view, copy the target, make the optimizer."""
        with no_grad():
            z = self.project(view[:2] if view.shape[0] > 2 else view)
            if self.uses_predictor:
                if self.predictor is None:
                    self.predictor = projection_head(z.shape[1], 512, batch_norm=True)
                self.predictor(z)
            self._build_extra(z)
        if self.uses_target:
            self.target = {"encoder": copy.deepcopy(self.encoder).freeze(),
                           "projector": copy.deepcopy(self.projector).freeze()}
        params = [p for m in self.online_modules() for p in m.parameters(trainable_only=True)]
        self.optimizer = self.make_optimizer(params)

    def _build_extra(self, z: Tensor) -> None:
        """Method-specific parts built from the first projections (queue, prototypes)."""

    def momentum(self) -> float:
        """The target's momentum at the current step."""
        if not self.schedules_momentum or self.total_steps is None:
            return self.base_momentum
        return momentum_schedule(min(self.step, self.total_steps), self.total_steps, self.base_momentum)

    def update_target(self) -> None:
        tau = self.momentum()
        momentum_update(self.target["encoder"], self.encoder, tau)
        momentum_update(self.target["projector"], self.projector, tau)

    # -- steps ---------------------------------------------------------------
    def views(self, batch: Tensor) -> list[Tensor]:
        """Two augmented views of ``batch`` (or the list ``augment`` returns)."""
        first = self.augment(batch)
        views = list(first) if isinstance(first, (list, tuple)) else [first, self.augment(batch)]
        if len(views) < 2:
            raise ValueError(f"{self.name}: augment must give at least 2 views, got {len(views)}")
        return [as_tensor(v) for v in views]

    def check_views(self, views: list[Tensor]) -> None:
        if len(views) != 2 or views[0].shape != views[1].shape:
            raise ShapeError(f"{self.name}: expected two views of one shape, got shapes {[v.shape for v in views]}")

    def loss(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The method's loss and a batch of its projections (for the collapse monitor)."""
        raise NotImplementedError

    def after_step(self) -> None:
        if self.uses_target:
            with no_grad():
                self.update_target()

    def train_step(self, batch) -> tuple[float, float]:
        """One step on a batch (module docstring); returns (loss, embedding_std)."""
        for module in [self.augment, *self.online_modules()]:
            if isinstance(module, Module):
                module.train()
        views = self.views(as_tensor(batch))
        self.check_views(views)
        if self.optimizer is None:
            self._start(views[0])
        cost, z = self.loss(views)
        self.optimizer.zero_grad()
        cost.backward()
        self.before_update()
        self.optimizer.step()
        self.after_step()
        self.step += 1
        return cost.item(), embedding_std(z)

    def before_update(self) -> None:
        """Hook between backward and the optimizer step (SwAV freezes its prototypes here)."""

    def fit(self, x, epochs: int = 10, batch_size: int = 128, seed: int | None = None,
            knn=None, knn_k: int = 20) -> dict[str, list[float]]:
        """``epochs`` passes over the unlabelled ``x`` in shuffled batches (the last, short
        batch dropped). Returns per-epoch ``loss`` and ``embedding_std`` and, with ``knn`` =
        ((x_train, y_train), (x_test, y_test)), the encoder's ``knn_accuracy``. The momentum
        schedule runs from the trainer's first step to the last step of this call."""
        fn = f"{self.name}.fit"
        values = np.asarray(x)
        epochs, batch_size = positive_int(epochs, f"{fn}: epochs"), positive_int(batch_size, f"{fn}: batch_size")
        steps = len(values) // batch_size
        if batch_size < 2 or steps < 1:
            raise ValueError(f"{fn}: need batches of at least 2 samples and at least one full batch; got "
                             f"batch_size={batch_size} for {len(values)} samples")
        self.check_batch_size(batch_size)
        if values.dtype.kind != "f":
            values = values.astype(backend.get_default_dtype())
        self.total_steps = self.step + epochs * steps
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        history: dict[str, list[float]] = {"loss": [], "embedding_std": []}
        if knn is not None:
            history["knn_accuracy"] = []
        for _ in range(epochs):
            order = rng.permutation(len(values))
            results = [self.train_step(Tensor(values[order[s * batch_size:(s + 1) * batch_size]]))
                       for s in range(steps)]
            history["loss"].append(float(np.mean([r[0] for r in results])))
            history["embedding_std"].append(float(np.mean([r[1] for r in results])))
            if knn is not None:
                (x_bank, y_bank), (x_query, y_query) = knn
                history["knn_accuracy"].append(knn_accuracy(encode(self.encoder, x_bank), y_bank,
                                                            encode(self.encoder, x_query), y_query, k=knn_k))
        self.encoder.eval()
        return history

    def check_batch_size(self, batch_size: int) -> None:
        """Method-specific checks of the batch size (MoCo v2's queue)."""


class MoCoV2Trainer(SiameseTrainer):
    """MoCo v2 (He et al. 2020; Chen et al. 2020): q = normalize(projector(encoder(v1))), keys
    k = normalize(target(v2)) from the momentum encoder (fixed ``momentum`` 0.999), loss
    :func:`lamina.functional.moco_v2_loss` against the :class:`lamina.models.MoCoQueue` of
    the last ``queue_size`` keys (a multiple of the batch size), which then takes k.
    ``temperature`` 0.2. One direction per step, as the reference."""

    name = "MoCoV2Trainer"
    uses_target = True

    def __init__(self, encoder: Module, augment, projector: Module | None = None, queue_size: int = 65536,
                 temperature: float = 0.2, momentum: float = 0.999, **kwargs):
        super().__init__(encoder, augment, projector, None, momentum, **kwargs)
        self.queue_size = positive_int(queue_size, f"{self.name}: queue_size")
        self.temperature = _positive_number(temperature, "temperature", self.name)
        self.queue: MoCoQueue | None = None

    def check_batch_size(self, batch_size: int) -> None:
        if self.queue_size % batch_size:
            raise ValueError(f"{self.name}: queue_size {self.queue_size} is not a multiple of batch_size {batch_size}")

    def _build_extra(self, z: Tensor) -> None:
        self.queue = MoCoQueue(z.shape[1], self.queue_size, name="queue")

    def loss(self, views):
        q = F.normalize(self.project(views[0]), axis=-1)
        k = F.normalize(self.target_project(views[1]), axis=-1)
        cost = F.moco_v2_loss(q, k, self.queue(), self.temperature)
        self._keys = k
        return cost, q

    def after_step(self) -> None:
        super().after_step()
        self.queue.enqueue(self._keys)


class MoCoV3Trainer(SiameseTrainer):
    """MoCo v3 (Chen, Xie and He 2021): no queue; q_i = predictor(projector(encoder(v_i))),
    k_i the momentum encoder's projections, loss :func:`lamina.functional.moco_v3_loss`
    (symmetric, in-batch negatives, ``temperature`` 0.2); the momentum follows
    :func:`momentum_schedule` from ``momentum`` (0.99) to 1."""

    name = "MoCoV3Trainer"
    uses_predictor = uses_target = schedules_momentum = True

    def __init__(self, encoder: Module, augment, projector: Module | None = None, predictor: Module | None = None,
                 temperature: float = 0.2, momentum: float = 0.99, **kwargs):
        super().__init__(encoder, augment, projector, predictor, momentum, **kwargs)
        self.temperature = _positive_number(temperature, "temperature", self.name)

    def loss(self, views):
        z1, z2 = self.project(views[0]), self.project(views[1])
        q1, q2 = self.predictor(z1), self.predictor(z2)
        k1, k2 = self.target_project(views[0]), self.target_project(views[1])
        return F.moco_v3_loss(q1, q2, k1, k2, self.temperature), z1


class BYOLTrainer(SiameseTrainer):
    """BYOL (Grill et al. 2020): p_i = predictor(projector(encoder(v_i))) online, z'_i the
    target's projections, loss :func:`lamina.functional.byol_loss`; the target's tau follows
    :func:`momentum_schedule` from ``momentum`` (0.996) to 1. The predictor defaults to
    projection_head(D, 512, batch_norm=True), D the projection's size."""

    name = "BYOLTrainer"
    uses_predictor = uses_target = schedules_momentum = True

    def loss(self, views):
        z1, z2 = self.project(views[0]), self.project(views[1])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return F.byol_loss(p1, p2, self.target_project(views[0]), self.target_project(views[1])), z1


class SimSiamTrainer(SiameseTrainer):
    """SimSiam (Chen and He 2021): one network, no momentum; z_i = projector(encoder(v_i)),
    p_i = predictor(z_i) (give a bottleneck predictor, e.g. projection_head(D, D // 4,
    batch_norm=True)), loss :func:`lamina.functional.simsiam_loss` with z detached."""

    name = "SimSiamTrainer"
    uses_predictor = True

    def loss(self, views):
        z1, z2 = self.project(views[0]), self.project(views[1])
        return F.simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2), z1


class SwAVTrainer(SiameseTrainer):
    """SwAV (Caron et al. 2020): every view v (2 large crops then any small ones, from a
    multi-crop ``augment`` such as :class:`lamina.train.MultiCrop`, or 2 calls of a plain
    one) is embedded as z_v = normalize(projector(encoder(v))) and scored against
    ``n_prototypes`` unit prototypes (:class:`lamina.models.SwAVPrototypes`, renormalised
    before every step and not updated in the first ``freeze_prototypes_steps`` steps); the
    loss is :func:`lamina.functional.swav_loss` (``temperature`` 0.1, Sinkhorn ``epsilon``
    0.05, ``sinkhorn_iterations`` 3). ``queue_size`` > 0 keeps the embeddings of the last
    batches of the assigned crops and adds their scores to the Sinkhorn problem once full."""

    name = "SwAVTrainer"

    def __init__(self, encoder: Module, augment, projector: Module | None = None, n_prototypes: int = 30,
                 temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
                 crops_for_assign=(0, 1), freeze_prototypes_steps: int = 0, queue_size: int = 0, **kwargs):
        super().__init__(encoder, augment, projector, None, **kwargs)
        self.prototypes = SwAVPrototypes(n_prototypes)
        self.temperature = _positive_number(temperature, "temperature", self.name)
        self.epsilon = _positive_number(epsilon, "epsilon", self.name)
        self.sinkhorn_iterations = positive_int(sinkhorn_iterations, f"{self.name}: sinkhorn_iterations")
        self.crops_for_assign = tuple(crops_for_assign)
        if isinstance(freeze_prototypes_steps, bool) or not isinstance(freeze_prototypes_steps, numbers.Integral) \
                or freeze_prototypes_steps < 0:
            raise ValueError(f"{self.name}: freeze_prototypes_steps must be an int >= 0, got "
                             f"{freeze_prototypes_steps!r}")
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        if isinstance(queue_size, bool) or not isinstance(queue_size, numbers.Integral) or queue_size < 0:
            raise ValueError(f"{self.name}: queue_size must be an int >= 0, got {queue_size!r}")
        self.queue_size = int(queue_size)
        self.queue: np.ndarray | None = None
        self.queued = 0

    def online_modules(self) -> list[Module]:
        return [self.encoder, self.projector, self.prototypes]

    def check_views(self, views) -> None:
        if any(v.shape[0] != views[0].shape[0] for v in views):
            raise ShapeError(f"{self.name}: every crop must hold the batch's images, got shapes "
                             f"{[v.shape for v in views]}")
        if max(self.crops_for_assign) >= len(views):
            raise ValueError(f"{self.name}: crops_for_assign {self.crops_for_assign} names a crop beyond the "
                             f"{len(views)} views")

    def _build_extra(self, z: Tensor) -> None:
        self.prototypes(z)
        if self.queue_size:
            self.queue = np.zeros((len(self.crops_for_assign), self.queue_size, z.shape[1]), dtype=z.data.dtype)

    def check_batch_size(self, batch_size: int) -> None:
        if self.queue_size % batch_size:
            raise ValueError(f"{self.name}: queue_size {self.queue_size} is not a multiple of batch_size {batch_size}")

    def loss(self, views):
        self.prototypes.normalize_()
        embeddings = [F.normalize(self.project(v), axis=-1) for v in views]
        scores = [self.prototypes(z) for z in embeddings]
        queue_scores = None
        if self.queue is not None and self.queued >= self.queue_size:
            kernel = self.prototypes.weight.data
            queue_scores = [self.queue[i] @ kernel for i in range(len(self.crops_for_assign))]
        cost = F.swav_loss(scores, self.crops_for_assign, self.temperature, self.epsilon, self.sinkhorn_iterations,
                           queue_scores)
        if self.queue is not None:
            batch = embeddings[0].shape[0]
            self.queue[:, batch:] = self.queue[:, :-batch].copy()
            for i, a in enumerate(self.crops_for_assign):
                self.queue[i, :batch] = embeddings[a].data
            self.queued += batch
        return cost, embeddings[0]

    def before_update(self) -> None:
        if self.step < self.freeze_prototypes_steps:
            for p in self.prototypes.parameters():
                p.grad = None
