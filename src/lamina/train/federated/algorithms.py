"""Federated training simulated in one process: FedAvg, FedProx and SCAFFOLD.

One round of :class:`FedAvg` (McMahan et al. 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data"):

1. the server samples ``m = max(floor(fraction * K), 1)`` of the K clients without
   replacement (a NumPy generator seeded with ``seed``);
2. each sampled client k starts from the global weights w and runs ``local_epochs`` epochs
   of SGD (step ``lr``, mini-batches of ``batch_size``; None is the full batch) on its
   ``n_k`` samples, giving ``w_k``;
3. the server forms the pseudo-gradient ``Delta = sum_k p_k (w_k - w)`` with
   ``p_k = n_k / sum_j n_j`` (``weighted=False``: ``p_k = 1/m``) and hands it to the server
   optimizer (:mod:`lamina.train.federated.server`; the default ``ServerSGD(lr=1)`` gives
   ``w = sum_k p_k w_k``, FedAdam / FedYogi / FedAdagrad / FedAvgM the adaptive variants).

Only trainable parameters are federated this way. Buffers (batch-norm running mean and
variance) are replaced by their ``p_k``-weighted average over the sampled clients, as FedAvg
averages every entry of the state dict; frozen parameters never change.

:class:`FedProx` (Li et al. 2020) adds ``mu/2 ||w - w_global||^2`` to each local loss, so the
local gradient gains ``mu (w - w_global)``. :class:`SCAFFOLD` (Karimireddy et al. 2020) keeps
a server control variate c and one c_i per client (all starting at 0); local steps use
``g - c_i + c``; after K local steps, option II sets ``c_i+ = c_i - c + (w - w_i)/(K lr)``
and the server adds ``(1/N) sum_{i in S} (c_i+ - c_i)`` to c (N clients in all), while the
weights follow the server optimizer (``ServerSGD(lr=eta_g)`` is the paper's global step).

Client-level differential privacy (DP-FedAvg, McMahan et al. 2018): with ``clip_norm`` S each
client update is scaled to norm at most S, the updates are averaged with equal weights and
Gaussian noise of std ``noise_multiplier * S / m`` is added; :attr:`FedAvg.accountant` (an
:class:`lamina.optim.privacy.RDPAccountant`) counts one subsampled-Gaussian step of rate m/K
per round (the analysis assumes Poisson sampling of clients; sampling m of K is the usual
approximation).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lamina
from lamina.nn.module import Module
from lamina.optim.privacy import RDPAccountant
from lamina.train.federated.client import (
    ClientData,
    as_clients,
    as_input,
    buffers,
    local_sgd,
    trainable_weights,
)
from lamina.train.federated.server import ServerOptimizer, ServerSGD

__all__ = ["SCAFFOLD", "FedAvg", "FedProx", "FederatedResult"]

Weights = dict[str, np.ndarray]


@dataclass
class FederatedResult:
    """What :meth:`FedAvg.fit` returns: one record per round (``round``, ``clients`` sampled,
    ``client_losses`` (each one's mean local training loss), ``test_loss`` and
    ``test_accuracy`` on the test data, None without it) and the trained global ``model``."""

    model: Module
    history: list[dict] = field(default_factory=list)

    def _column(self, key: str) -> list:
        return [record[key] for record in self.history]

    @property
    def test_accuracy(self) -> list:
        return self._column("test_accuracy")

    @property
    def test_loss(self) -> list:
        return self._column("test_loss")

    @property
    def client_losses(self) -> list:
        return self._column("client_losses")


def _positive(value: Any, name: str, who: str, integer: bool = False, allow_zero: bool = False) -> Any:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value < 0 \
            or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: {name} must be {'an integer' if integer else 'a finite number'} {bound}; "
                         f"got {value!r}")
    return int(value) if integer else float(value)


class FedAvg:
    """``FedAvg(model, loss, lr, local_epochs=1, batch_size=None, fraction=1.0,
    server_optimizer=None, weighted=True, seed=0, clip_norm=None, noise_multiplier=0.0)``.

    ``model`` is the global model (or a function returning it), trained in place; ``loss(output,
    labels)`` a scalar mean over the batch. :meth:`fit` runs rounds over a list of client
    datasets, :meth:`run_round` one round. See the module docstring for the update."""

    def __init__(self, model: Module | Callable[[], Module], loss: Callable, lr: float, local_epochs: int = 1,
                 batch_size: int | None = None, fraction: float = 1.0, server_optimizer: ServerOptimizer | None = None,
                 weighted: bool = True, seed: int | None = 0, clip_norm: float | None = None,
                 noise_multiplier: float = 0.0):
        who = self._name
        self.model = model if isinstance(model, Module) else model()
        if not isinstance(self.model, Module):
            raise TypeError(f"{who}: model must be a Module or a function returning one; "
                            f"got {type(self.model).__name__}")
        self.loss = loss
        self.lr = _positive(lr, "lr", who)
        self.local_epochs = _positive(local_epochs, "local_epochs", who, integer=True)
        self.batch_size = None if batch_size is None else _positive(batch_size, "batch_size", who, integer=True)
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
            raise ValueError(f"{who}: fraction (the share C of clients sampled per round) must lie in (0, 1]; "
                             f"got {fraction!r}")
        self.fraction = float(fraction)
        self.server_optimizer = ServerSGD(lr=1.0) if server_optimizer is None else server_optimizer
        if not isinstance(self.server_optimizer, ServerOptimizer):
            raise TypeError(f"{who}: server_optimizer must be a ServerOptimizer (ServerSGD, FedAdam, ...); "
                            f"got {type(self.server_optimizer).__name__}")
        self.weighted = bool(weighted)
        self.rng = np.random.default_rng(seed)
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm", who)
        self.noise_multiplier = _positive(noise_multiplier, "noise_multiplier", who, allow_zero=True)
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ValueError(f"{who}: noise_multiplier > 0 needs clip_norm (the bound on each client's update)")
        self.accountant = RDPAccountant() if self.clip_norm is not None and self.noise_multiplier > 0 else None
        self.rounds_done = 0

    @property
    def _name(self) -> str:
        return type(self).__name__

    # -- hooks for the variants ------------------------------------------------------------
    def _start_round(self, clients: list[ClientData], global_weights: Weights) -> None:
        self._global = global_weights

    def _correction(self, client: int) -> Callable[[str, np.ndarray], np.ndarray | None] | None:
        return None

    def _client_done(self, client: int, update: Weights, steps: int) -> None:
        pass

    def _end_round(self, clients: list[ClientData]) -> None:
        pass

    # -- one round -------------------------------------------------------------------------
    def sample_clients(self, count: int) -> np.ndarray:
        """The indices of this round's clients: ``max(floor(fraction * count), 1)`` of them,
        drawn without replacement and sorted."""
        m = max(int(math.floor(self.fraction * count + 1e-9)), 1)
        return np.arange(count) if m == count else np.sort(self.rng.choice(count, size=m, replace=False))

    def _build(self, clients: list[ClientData]) -> None:
        if not any(True for _ in self.model.named_parameters()):
            with lamina.no_grad():
                self.model(as_input(clients[0][0][:1]))

    def run_round(self, clients: Sequence[Any]) -> dict:
        """Sample clients, train each locally from the global weights, aggregate and step the
        server; returns ``{"round", "clients", "client_losses"}``."""
        clients = as_clients(clients, f"{self._name}.run_round")
        self._build(clients)
        global_weights = trainable_weights(self.model)
        global_state = self.model.state_dict()
        global_state = {name: np.array(value, copy=True) for name, value in global_state.items()}
        self._start_round(clients, global_weights)
        selected = self.sample_clients(len(clients))
        updates, client_buffers, losses = [], [], []
        for k in selected.tolist():
            self.model.load_state_dict(global_state)
            rng = np.random.default_rng(self.rng.integers(2 ** 63))
            steps, mean_loss = local_sgd(self.model, self.loss, clients[k], self.lr, self.local_epochs,
                                         self.batch_size, rng, self._correction(k))
            update = {name: w - global_weights[name] for name, w in trainable_weights(self.model).items()}
            self._client_done(k, update, steps)
            updates.append(update)
            client_buffers.append(buffers(self.model))
            losses.append(mean_loss)
        sizes = np.array([len(clients[k][0]) for k in selected], dtype=np.float64)
        uniform = not self.weighted or self.clip_norm is not None
        shares = np.full(len(sizes), 1 / len(sizes)) if uniform else sizes / sizes.sum()
        delta = self._aggregate(updates, shares, len(clients))
        new_weights = self.server_optimizer.step(global_weights, delta)
        self.model.load_state_dict(global_state)
        for name, p in self.model.named_parameters(trainable_only=True):
            p.data = new_weights[name]
        self._set_buffers(client_buffers, sizes / sizes.sum())
        self._end_round(clients)
        self.rounds_done += 1
        return {"round": self.rounds_done, "clients": selected.tolist(), "client_losses": losses}

    def _aggregate(self, updates: list[Weights], shares: np.ndarray, population: int) -> Weights:
        """``sum_k p_k update_k``; under DP, clipped updates plus Gaussian noise."""
        if self.clip_norm is not None:
            updates = [self._clip(update) for update in updates]
        delta = {name: sum(p * update[name] for p, update in zip(shares, updates, strict=True))
                 for name in updates[0]}
        if self.accountant is not None:
            std = self.noise_multiplier * self.clip_norm / len(updates)
            delta = {name: d + self.rng.normal(0.0, std, size=d.shape).astype(d.dtype) for name, d in delta.items()}
            self.accountant.step(self.noise_multiplier, len(updates) / population)
        return delta

    def _clip(self, update: Weights) -> Weights:
        norm = math.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update.values()))
        scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        return {name: (u * scale).astype(u.dtype) for name, u in update.items()}

    def _set_buffers(self, client_buffers: list[Weights], shares: np.ndarray) -> None:
        averaged = {}
        for name, first in client_buffers[0].items():
            mean = sum(p * b[name].astype(np.float64) for p, b in zip(shares, client_buffers, strict=True))
            averaged[name] = np.rint(mean).astype(first.dtype) if first.dtype.kind in "iu" else mean.astype(first.dtype)
        if averaged:
            self.model.load_state_dict(averaged, strict=False)

    # -- rounds and evaluation -------------------------------------------------------------
    def evaluate(self, x: Any, y: Any, batch_size: int = 1024) -> tuple[float, float | None]:
        """(mean loss, accuracy) of the global model on ``(x, y)`` in evaluation mode; the
        accuracy (argmax of 2-d outputs against integer labels) is None for other outputs."""
        x, y = np.asarray(x), np.asarray(y)
        self.model.eval()
        total, correct, classified = 0.0, 0, True
        with lamina.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                output = self.model(as_input(xb))
                total += float(self.loss(output, as_input(yb)).data) * len(xb)
                scores = np.asarray(output.data)
                classified = classified and scores.ndim == 2 and scores.shape[1] > 1 and yb.dtype.kind in "iu"
                if classified:
                    correct += int(np.sum(scores.argmax(axis=1) == yb))
        self.model.train()
        return total / len(x), (correct / len(x) if classified else None)

    def fit(self, clients: Sequence[Any], rounds: int, test: tuple[Any, Any] | None = None,
            verbose: int = 0) -> FederatedResult:
        """Run ``rounds`` rounds over the client datasets (a list of ``(x, y)`` pairs or
        ArrayDatasets), evaluating on ``test`` = ``(x, y)`` after each round."""
        rounds = _positive(rounds, "rounds", f"{self._name}.fit", integer=True)
        clients = as_clients(clients, f"{self._name}.fit")
        result = FederatedResult(self.model)
        for _ in range(rounds):
            record = self.run_round(clients)
            record["test_loss"], record["test_accuracy"] = self.evaluate(*test) if test is not None else (None, None)
            result.history.append(record)
            if verbose:
                print(f"{self._name} round {record['round']}: mean client loss "
                      f"{np.mean(record['client_losses']):.4f}, test loss {record['test_loss']}, "
                      f"test accuracy {record['test_accuracy']}")
        return result


class FedProx(FedAvg):
    """FedAvg whose local loss adds ``mu/2 ||w - w_global||^2`` (Li et al. 2020); ``mu=0`` is
    FedAvg. Other arguments as :class:`FedAvg`."""

    def __init__(self, model: Module | Callable[[], Module], loss: Callable, lr: float, mu: float = 0.01,
                 **kwargs: Any):
        super().__init__(model, loss, lr, **kwargs)
        self.mu = _positive(mu, "mu", self._name, allow_zero=True)

    def _correction(self, client: int):
        if self.mu == 0:
            return None
        return lambda name, w: self.mu * (w - self._global[name])


class SCAFFOLD(FedAvg):
    """SCAFFOLD (Karimireddy et al. 2020) with option II control variates: local steps use
    ``g - c_i + c``; ``server_optimizer=ServerSGD(lr=eta_g)`` sets the global step size.
    :attr:`control` is c and :attr:`client_controls` the c_i (by client index). The paper
    averages the weight updates with equal weights (``weighted=False``); the default weights
    them by sample counts as FedAvg does. Other arguments as :class:`FedAvg`."""

    def __init__(self, model: Module | Callable[[], Module], loss: Callable, lr: float, **kwargs: Any):
        super().__init__(model, loss, lr, **kwargs)
        self.control: Weights = {}
        self.client_controls: dict[int, Weights] = {}

    def _start_round(self, clients: list[ClientData], global_weights: Weights) -> None:
        super()._start_round(clients, global_weights)
        if not self.control:
            self.control = {name: np.zeros_like(w) for name, w in global_weights.items()}
        self._control_changes: list[Weights] = []

    def _client_control(self, client: int) -> Weights:
        if client not in self.client_controls:
            self.client_controls[client] = {name: np.zeros_like(c) for name, c in self.control.items()}
        return self.client_controls[client]

    def _correction(self, client: int):
        own = self._client_control(client)
        return lambda name, w: self.control[name] - own[name]

    def _client_done(self, client: int, update: Weights, steps: int) -> None:
        own = self._client_control(client)
        new = {name: own[name] - self.control[name] - update[name] / (steps * self.lr) for name in own}
        self._control_changes.append({name: new[name] - own[name] for name in own})
        self.client_controls[client] = new

    def _end_round(self, clients: list[ClientData]) -> None:
        for name in self.control:
            change = sum(c[name] for c in self._control_changes) / len(clients)
            self.control[name] = (self.control[name] + change).astype(self.control[name].dtype)
