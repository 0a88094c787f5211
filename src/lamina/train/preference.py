"""Preference optimization of causal language models, after Hugging Face TRL: DPO and its
variants against a frozen reference model, the reference-free ORPO and SimPO, and reward
models trained on the same pairs.

Each trainer reads a :class:`~lamina.train.PreferenceDataset` in batches of B pairs collated as
2B rows (prompt + chosen, then prompt + rejected) that the model reads in one call. A row's
sequence log-probability log pi(y | x) sums its completion's token log-probabilities
(:func:`lamina.functional.sequence_log_probs`); the loss is the matching function of
:mod:`lamina.functional` (:func:`~lamina.functional.dpo_loss`, :func:`~lamina.functional.orpo_loss`,
:func:`~lamina.functional.simpo_loss`, :func:`~lamina.functional.reward_model_loss`).

Every step logs TRL's quantities: ``loss``, ``rewards/chosen`` and ``rewards/rejected`` (the mean
implicit rewards), ``rewards/accuracies`` (the share of pairs whose chosen reward is the larger),
``rewards/margins`` (the mean reward difference) and, for the language-model trainers,
``logps/chosen`` and ``logps/rejected``. ``fit`` returns a :class:`~lamina.train.History` of
their per-epoch means (``val_`` ones on ``eval_data``).

LoRA: a :class:`DPOTrainer` of a model with adapters (:func:`lamina.nn.apply_lora`) and no
``ref_model`` uses the model itself with its adapters switched off as the reference (TRL's peft
path): no second copy of the weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
from collections.abc import Iterator

import numpy as np

import lamina
from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.layer import positive_int
from lamina.nn.lora import LoRAAdapter
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam, clip_grad_norm
from lamina.train.history import History
from lamina.train.preference_data import PreferenceBatch, PreferenceDataset
from lamina.train.reward_model import RewardModel

__all__ = ["DPOTrainer", "ORPOTrainer", "RewardTrainer", "SimPOTrainer", "adapters_disabled"]


@contextlib.contextmanager
def adapters_disabled(model: Module) -> Iterator[Module]:
    """Within the block ``model`` runs without its LoRA adapters (their low-rank terms skipped): the
    base model. Adapters merged into their weights cannot be switched off (a ValueError)."""
    adapters = [m for m in model.modules() if isinstance(m, LoRAAdapter)]
    if any(a.merged for a in adapters):
        raise ValueError("adapters_disabled: some LoRA adapters of the model are merged into its weights; unmerge "
                         "them (lamina.nn.unmerge_lora) to recover the base model")
    for a in adapters:
        a.merged = True
    try:
        yield model
    finally:
        for a in adapters:
            a.merged = False


def _has_adapters(model: Module) -> bool:
    return any(isinstance(m, LoRAAdapter) for m in model.modules())


def _positive(value, name: str, who: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf
    if not ok:
        raise ValueError(f"{who}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, float]:
    chosen, rejected = chosen_rewards.numpy().ravel(), rejected_rewards.numpy().ravel()
    return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
            "rewards/accuracies": float((chosen > rejected).mean()),
            "rewards/margins": float((chosen - rejected).mean())}


def _completion_tokens(batch: PreferenceBatch) -> np.ndarray:
    """The number of scored tokens of each row (a row's first token is never scored)."""
    return batch.completion_mask[:, 1:].sum(axis=1)


class _BatchMeans:
    """Means of logged quantities over batches, each batch weighted by its size; a quantity a batch
    does not log (KTO's rewards of a group it lacks) is averaged over the batches that do."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.weights: dict[str, int] = {}

    def add(self, logs: dict[str, float], size: int) -> None:
        for key, value in logs.items():
            self.totals[key] = self.totals.get(key, 0.0) + value * size
            self.weights[key] = self.weights.get(key, 0) + size

    def result(self) -> dict[str, float]:
        return {key: value / self.weights[key] for key, value in self.totals.items()}


class _PairTrainer:
    """What the preference trainers share: the optimizer, the steps, evaluation and fit."""

    who = "PreferenceTrainer"
    batch_type: type = PreferenceBatch
    dataset_type: type = PreferenceDataset

    def __init__(self, model: Module, optimizer=None, lr: float = 1e-4, clip_norm: float | None = None,
                 disable_dropout: bool = True):
        if not isinstance(model, Module):
            raise TypeError(f"{self.who}: the model must be a Module, got {type(model).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.lr = _positive(lr, "lr", self.who)
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm", self.who)
        self.disable_dropout = bool(disable_dropout)
        self.history = History()
        self.steps = 0

    # -- to define in each trainer ---------------------------------------------------------
    def compute_loss(self, batch: PreferenceBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        """(the batch's loss on the graph, its logged quantities)."""
        raise NotImplementedError

    # -- shared pieces ---------------------------------------------------------------------
    def _run(self, model: Module, batch: PreferenceBatch) -> Tensor:
        return model(lamina.tensor(batch.input_ids), key_mask=batch.attention_mask)

    def _sum_log_probs(self, model: Module, batch: PreferenceBatch) -> Tensor:
        """log pi(y | x) of the 2B rows, (2B,)."""
        return F.sequence_log_probs(self._run(model, batch), batch.input_ids, batch.completion_mask)

    def _policy_mode(self):
        if self.disable_dropout:
            return evaluation_mode(self.model)
        self.model.train()
        return contextlib.nullcontext(self.model)

    def _check_batch(self, batch) -> PreferenceBatch:
        if not isinstance(batch, self.batch_type):
            raise TypeError(f"{self.who}: expected a {self.batch_type.__name__} "
                            f"({self.dataset_type.__name__}.collate), got {type(batch).__name__}")
        return batch

    def train_step(self, batch: PreferenceBatch) -> dict[str, float]:
        """One optimizer step on ``batch``; returns its logged quantities (before the step)."""
        batch = self._check_batch(batch)
        with self._policy_mode():
            loss, logs = self.compute_loss(batch, training=True)
        if self.optimizer is None:
            self.optimizer = Adam(self.model.parameters(trainable_only=True), lr=self.lr)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm(self.model.parameters(trainable_only=True), self.clip_norm)
        self.optimizer.step()
        self.steps += 1
        return logs

    def evaluate(self, data: PreferenceDataset, batch_size: int = 32) -> dict[str, float]:
        """The logged quantities over all of ``data``'s pairs (means weighted by batch size),
        without gradients, dropout off."""
        means = _BatchMeans()
        with no_grad(), evaluation_mode(self.model):
            for batch in self._dataset(data).batches(batch_size):
                means.add(self.compute_loss(batch)[1], len(batch))
        return means.result()

    def _dataset(self, data) -> PreferenceDataset:
        if not isinstance(data, self.dataset_type):
            raise TypeError(f"{self.who}: expected a {self.dataset_type.__name__}, got {type(data).__name__}")
        if not len(data):
            raise ValueError(f"{self.who}: the dataset is empty")
        return data

    def fit(self, data: PreferenceDataset, epochs: int = 1, batch_size: int = 8, shuffle: bool = True,
            seed: int | None = None, eval_data: PreferenceDataset | None = None) -> History:
        """``epochs`` passes over ``data`` in batches of ``batch_size`` pairs; each epoch's mean logged
        quantities (and ``val_`` ones on ``eval_data``) go into :attr:`history`, which is returned."""
        data = self._dataset(data)
        epochs = positive_int(epochs, f"{self.who}.fit: epochs")
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        for _ in range(epochs):
            means = _BatchMeans()
            for batch in data.batches(batch_size, shuffle=shuffle, seed=int(rng.integers(2 ** 31))):
                logs = self.train_step(batch)
                self.history.record_iteration(logs)
                means.add(logs, len(batch))
            logs = means.result()
            if eval_data is not None:
                logs.update({f"val_{key}": value for key, value in self.evaluate(eval_data, batch_size).items()})
            self.history.record_epoch(len(self.history.epochs) + 1, logs)
        return self.history


class DPOTrainer(_PairTrainer):
    """Direct preference optimization of the causal language model ``model`` (a trained, built
    model: ``model(ids, key_mask=...)`` -> scores (N, T, V)), as TRL's ``DPOTrainer``.

    ``ref_model``: the frozen reference pi_ref; None: a frozen copy of ``model`` as it is now, or,
    for a model with LoRA adapters, ``model`` with its adapters switched off. ``beta``,
    ``loss_type``, ``label_smoothing``: :func:`lamina.functional.dpo_loss`'s (``bco_pair`` is given
    the running mean of the batches' mean rewards, as TRL). ``average_log_prob``: score
    length-averaged log-probabilities (None: only for ``ipo``, as TRL). ``optimizer``: an
    optimizer over the model's trainable parameters (None: Adam at ``lr``); ``clip_norm``: the
    gradients' joint L2 norm is clipped to it; ``disable_dropout``: the policy is run in evaluation
    mode (TRL's default), the reference always is.
    """

    who = "DPOTrainer"

    def __init__(self, model: Module, ref_model: Module | None = None, beta: float = 0.1, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0, average_log_prob: bool | None = None, optimizer=None,
                 lr: float = 1e-4, clip_norm: float | None = None, disable_dropout: bool = True):
        super().__init__(model, optimizer, lr, clip_norm, disable_dropout)
        self.beta = _positive(beta, "beta", self.who)
        if loss_type not in F.DPO_LOSS_TYPES:
            raise ValueError(f"{self.who}: unknown loss_type {loss_type!r}; expected one of "
                             f"{', '.join(F.DPO_LOSS_TYPES)}")
        self.loss_type = loss_type
        F.dpo_loss([0.0], [0.0], [0.0], [0.0], beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        self.label_smoothing = float(label_smoothing)
        self.average_log_prob = loss_type == "ipo" if average_log_prob is None else bool(average_log_prob)
        if not model.built:
            raise ValueError(f"{self.who}: the model is not built (never called, so never trained); training "
                             "against a reference starts from a trained model, which also serves as the reference")
        self.uses_adapters = ref_model is None and _has_adapters(model)
        if ref_model is None and not self.uses_adapters:
            ref_model = copy.deepcopy(model)
        if ref_model is model:
            raise ValueError(f"{self.who}: ref_model must not be the model being trained")
        if ref_model is not None:
            ref_model.freeze()
            ref_model.eval()
        self.ref_model = ref_model
        self._bco_means: list[float] = []

    def _log_probs(self, model: Module, batch: PreferenceBatch) -> Tensor:
        logps = self._sum_log_probs(model, batch)
        if self.average_log_prob:
            logps = logps / np.maximum(_completion_tokens(batch), 1).astype(logps.dtype)
        return logps

    def reference_log_probs(self, batch: PreferenceBatch) -> Tensor:
        """log pi_ref(y | x) of the batch's 2B rows, a constant (2B,)."""
        with no_grad():
            if self.ref_model is not None:
                with evaluation_mode(self.ref_model):
                    return self._log_probs(self.ref_model, batch)
            with adapters_disabled(self.model), evaluation_mode(self.model):
                return self._log_probs(self.model, batch)

    def _bco_delta(self, policy: Tensor, reference: Tensor, training: bool) -> float | None:
        if self.loss_type != "bco_pair":
            return None
        batch_mean = float((policy.numpy() - reference.numpy()).mean() * self.beta)
        if training:
            self._bco_means.append(batch_mean)
        return float(np.mean(self._bco_means)) if self._bco_means else batch_mean

    def compute_loss(self, batch: PreferenceBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        reference = self.reference_log_probs(batch)
        policy = self._log_probs(self.model, batch)
        c, r = batch.chosen, batch.rejected
        loss, chosen_rewards, rejected_rewards = F.dpo_loss(
            policy[c], policy[r], reference[c], reference[r], beta=self.beta, loss_type=self.loss_type,
            label_smoothing=self.label_smoothing, bco_delta=self._bco_delta(policy, reference, training))
        logs = {"loss": loss.item(), **_pair_metrics(chosen_rewards, rejected_rewards),
                "logps/chosen": float(policy[c].numpy().mean()), "logps/rejected": float(policy[r].numpy().mean())}
        return loss, logs


class _ReferenceFreeTrainer(_PairTrainer):
    """ORPO and SimPO: losses of the policy's length-averaged log-probabilities alone."""

    def _average_log_probs(self, batch: PreferenceBatch) -> tuple[Tensor, Tensor]:
        """(the rows' average log-probabilities (2B,), the chosen rows' token-level NLL)."""
        sums = self._sum_log_probs(self.model, batch)
        counts = np.maximum(_completion_tokens(batch), 1).astype(sums.dtype)
        c = batch.chosen
        nll = -F.sum(sums[c]) / float(counts[c].sum())
        return sums / counts, nll

    def _logs(self, loss: Tensor, rewards: tuple[Tensor, Tensor], averages: Tensor, batch) -> dict[str, float]:
        return {"loss": loss.item(), **_pair_metrics(*rewards),
                "logps/chosen": float(averages[batch.chosen].numpy().mean()),
                "logps/rejected": float(averages[batch.rejected].numpy().mean())}


class ORPOTrainer(_ReferenceFreeTrainer):
    """ORPO (odds-ratio preference optimization) of ``model``, as TRL's ``ORPOTrainer``: the chosen
    completions' token-level NLL plus beta times the odds-ratio term, on length-averaged
    log-probabilities (:func:`lamina.functional.orpo_loss`); no reference model. The model may be
    unbuilt (ORPO is also a supervised fine-tuning). Other arguments as :class:`DPOTrainer`'s."""

    who = "ORPOTrainer"

    def __init__(self, model: Module, beta: float = 0.1, optimizer=None, lr: float = 1e-4,
                 clip_norm: float | None = None, disable_dropout: bool = True):
        super().__init__(model, optimizer, lr, clip_norm, disable_dropout)
        self.beta = _positive(beta, "beta", self.who)

    def compute_loss(self, batch: PreferenceBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        averages, nll = self._average_log_probs(batch)
        loss, *rewards = F.orpo_loss(averages[batch.chosen], averages[batch.rejected], chosen_nll=nll,
                                     beta=self.beta)
        return loss, self._logs(loss, rewards, averages, batch)


class SimPOTrainer(_ReferenceFreeTrainer):
    """SimPO of ``model`` (:func:`lamina.functional.simpo_loss`: length-averaged log-probabilities,
    target margin ``gamma``), as TRL's ``CPOTrainer`` with ``loss_type='simpo'`` and no NLL term;
    no reference model. Other arguments as :class:`DPOTrainer`'s."""

    who = "SimPOTrainer"

    def __init__(self, model: Module, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0,
                 optimizer=None, lr: float = 1e-4, clip_norm: float | None = None, disable_dropout: bool = True):
        super().__init__(model, optimizer, lr, clip_norm, disable_dropout)
        F.simpo_loss([0.0], [0.0], beta=beta, gamma=gamma, label_smoothing=label_smoothing)
        self.beta, self.gamma, self.label_smoothing = float(beta), float(gamma), float(label_smoothing)

    def compute_loss(self, batch: PreferenceBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        averages, _ = self._average_log_probs(batch)
        loss, *rewards = F.simpo_loss(averages[batch.chosen], averages[batch.rejected], beta=self.beta,
                                      gamma=self.gamma, label_smoothing=self.label_smoothing)
        return loss, self._logs(loss, rewards, averages, batch)


class RewardTrainer(_PairTrainer):
    """A :class:`~lamina.train.RewardModel` trained on preference pairs with the Bradley-Terry loss
    (:func:`lamina.functional.reward_model_loss`), as TRL's ``RewardTrainer``: the dataset's
    ``margins``, when it has them, are subtracted from the reward differences, and
    ``center_rewards_coefficient`` adds the centring penalty. Logs ``accuracy`` (the share of pairs
    ranked right) besides the reward quantities. Other arguments as :class:`DPOTrainer`'s."""

    who = "RewardTrainer"

    def __init__(self, model: RewardModel, optimizer=None, lr: float = 1e-4,
                 center_rewards_coefficient: float | None = None, clip_norm: float | None = None,
                 disable_dropout: bool = True):
        super().__init__(model, optimizer, lr, clip_norm, disable_dropout)
        if not isinstance(model, RewardModel):
            raise TypeError(f"{self.who}: the model must be a RewardModel, got {type(model).__name__}")
        self.center_rewards_coefficient = center_rewards_coefficient
        F.reward_model_loss([0.0], [0.0], center_rewards_coefficient=center_rewards_coefficient)

    def rewards(self, batch: PreferenceBatch) -> Tensor:
        """The model's rewards of the batch's 2B rows, (2B,)."""
        return self.model(lamina.tensor(batch.input_ids), key_mask=batch.attention_mask)

    def compute_loss(self, batch: PreferenceBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        rewards = self.rewards(batch)
        chosen, rejected = rewards[batch.chosen], rewards[batch.rejected]
        loss = F.reward_model_loss(chosen, rejected, margin=batch.margins,
                                   center_rewards_coefficient=self.center_rewards_coefficient)
        metrics = _pair_metrics(chosen, rejected)
        return loss, {"loss": loss.item(), "accuracy": metrics["rewards/accuracies"], **metrics}
