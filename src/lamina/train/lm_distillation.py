"""Distillation of causal language models: generalized knowledge distillation (GKD, Agarwal et
al., "On-policy distillation of language models: learning from self-generated mistakes", ICLR
2024), after Hugging Face TRL's GKDTrainer.

Each step takes a batch of prompts (B, P) (one length, no padding) and, for the off-policy
case, their dataset completions (B, L). With probability ``lmbda`` the student samples its own
completions (on-policy: :func:`lamina.text.generate_ids`, ``do_sample`` at ``temperature``, no
gradient through the sampling); otherwise the dataset's are used. Both models then score the
prompt + completion, and the loss is the token-level divergence (:func:`lamina.functional.
token_divergence`, JSD(beta) by default) between the teacher's and the student's next-token
distributions at ``temperature``, averaged over the completion tokens up to and including the
first ``eos_token_id``. The teacher is frozen and runs without a graph.

``lmbda = 0`` with ``beta = 0`` is supervised KD (forward KL on the dataset's completions);
``lmbda = 1`` is fully on-policy distillation; ``beta = 1`` the reverse KL.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

import lamina
from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.losses_lm_distill import TOKEN_DIVERGENCES, token_divergence
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam, clip_grad_norm
from lamina.train.history import History
from lamina.train.lm_rl import completion_mask

__all__ = ["GKDTrainer", "completion_logits"]


def completion_logits(logits, prompt_length: int):
    """The scores (N, L, V) that predict each completion token from a causal model's scores
    ``logits`` (N, P + L, V) of prompt + completion (position t predicts token t + 1)."""
    if logits.ndim != 3 or not 1 <= prompt_length < logits.shape[1]:
        raise ShapeError(f"completion_logits: expected logits (N, T, V) and 1 <= prompt_length < T, got "
                         f"{tuple(logits.shape)} and {prompt_length}")
    return logits[:, prompt_length - 1:-1]


def _unit_interval(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"GKDTrainer: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < math.inf:
        raise ValueError(f"GKDTrainer: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _ids(ids, name: str) -> np.ndarray:
    data = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2 or data.shape[1] == 0 or data.dtype.kind not in "iu":
        raise ShapeError(f"GKDTrainer: {name} must be integer token ids (B, length >= 1), got {data.dtype} "
                         f"{data.shape}")
    return data.astype(np.int64)


class GKDTrainer:
    """Generalized knowledge distillation of the causal language model ``student`` (built, with
    ``generate``, as GPT2 and Llama) from the frozen ``teacher`` (same vocabulary): see the
    module docstring.

    ``lmbda``: the probability that a batch is on-policy (student samples); ``beta``: JSD(beta)'s
    mixing weight; ``divergence``: 'jsd' (default), 'forward_kl' or 'reverse_kl';
    ``temperature``: of the sampling and of both distributions in the loss; ``max_new_tokens``:
    the sampled completions' length; ``eos_token_id``, ``pad_token_id``: the sampling's end and
    padding ids (tokens after the first end token are masked out); ``optimizer`` (None: Adam at
    ``lr``), ``clip_norm``; ``seed`` for the on-/off-policy draws and the sampling.
    """

    def __init__(self, student: Module, teacher: Module, lmbda: float = 0.5, beta: float = 0.5,
                 temperature: float = 1.0, max_new_tokens: int = 16, divergence: str = "jsd",
                 eos_token_id: int | None = None, pad_token_id: int | None = None, optimizer=None,
                 lr: float = 1e-4, clip_norm: float | None = None, seed: int | None = None):
        for role, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, Module):
                raise TypeError(f"GKDTrainer: the {role} must be a Module, got {type(model).__name__}")
            if not model.built:
                raise ValueError(f"GKDTrainer: the {role} is not built; build it (the teacher trained) first")
        if teacher is student:
            raise ValueError("GKDTrainer: the teacher must not be the student being trained")
        if not callable(getattr(student, "generate", None)):
            raise TypeError("GKDTrainer: the student must sample with generate (a causal language model with "
                            f"lamina.text.GenerationMixin, such as GPT2 or Llama), got {type(student).__name__}")
        if divergence not in TOKEN_DIVERGENCES:
            raise ValueError(f"GKDTrainer: divergence must be one of {TOKEN_DIVERGENCES}, got {divergence!r}")
        self.student, self.teacher = student, teacher
        self.teacher.freeze()
        self.teacher.eval()
        self.lmbda = _unit_interval(lmbda, "lmbda")
        self.beta = _unit_interval(beta, "beta")
        self.temperature = _positive(temperature, "temperature")
        self.max_new_tokens = positive_int(max_new_tokens, "GKDTrainer: max_new_tokens")
        self.divergence = divergence
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.optimizer = optimizer
        self.lr = _positive(lr, "lr")
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm")
        self.rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        self.history = History()
        self.steps = 0

    # -- data ------------------------------------------------------------------------------
    def sample(self, prompts) -> np.ndarray:
        """Completions (B, max_new_tokens) the student samples for ``prompts`` (no gradient)."""
        prompts = _ids(prompts, "prompts")
        with no_grad(), evaluation_mode(self.student):
            sequences = self.student.generate(prompts, max_new_tokens=self.max_new_tokens, do_sample=True,
                                              temperature=self.temperature, eos_token_id=self.eos_token_id,
                                              pad_token_id=self.pad_token_id, generator=self.rng)
        return np.asarray(sequences)[:, prompts.shape[1]:].astype(np.int64)

    def _batch(self, prompts, completions) -> tuple[np.ndarray, np.ndarray]:
        prompts = _ids(prompts, "prompts")
        if completions is None:
            return prompts, None
        completions = _ids(completions, "completions")
        if len(completions) != len(prompts):
            raise ShapeError(f"GKDTrainer: {len(prompts)} prompts but {len(completions)} completions")
        return prompts, completions

    # -- the loss --------------------------------------------------------------------------
    def loss(self, prompts, completions) -> Tensor:
        """The divergence between teacher and student over ``completions`` (B, L) of ``prompts``
        (B, P), averaged over the kept completion tokens (on the student's graph)."""
        prompts, completions = self._batch(prompts, completions)
        if completions is None:
            raise ValueError("GKDTrainer.loss: completions are required")
        sequences = lamina.tensor(np.concatenate([prompts, completions], axis=1))
        length = prompts.shape[1]
        with no_grad():
            teacher_logits = completion_logits(self.teacher(sequences), length).numpy()
        student_logits = completion_logits(self.student(sequences), length)
        return token_divergence(student_logits, teacher_logits, completion_mask(completions, self.eos_token_id),
                                self.divergence, self.beta, self.temperature)

    def evaluate(self, prompts, completions) -> float:
        """:meth:`loss` without a graph, the student in evaluation mode: a float."""
        with no_grad(), evaluation_mode(self.student):
            return float(self.loss(prompts, completions).item())

    # -- training --------------------------------------------------------------------------
    def _step(self, loss: Tensor) -> None:
        parameters = list(self.student.parameters(trainable_only=True))
        if self.optimizer is None:
            self.optimizer = Adam(parameters, lr=self.lr)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm(parameters, self.clip_norm)
        self.optimizer.step()

    def train_step(self, prompts, completions=None) -> dict[str, float]:
        """One update on a batch: on-policy with probability ``lmbda`` (always when ``completions``
        is None), else on ``completions``. Logs ``loss``, ``on_policy`` (1 or 0) and
        ``completion_length`` (kept tokens per completion)."""
        prompts, completions = self._batch(prompts, completions)
        on_policy = completions is None or self.rng.random() < self.lmbda
        if on_policy:
            completions = self.sample(prompts)
        loss = self.loss(prompts, completions)
        self._step(loss)
        self.steps += 1
        logs = {"loss": float(loss.item()), "on_policy": float(on_policy),
                "completion_length": float(completion_mask(completions, self.eos_token_id).sum(axis=1).mean())}
        self.history.record_iteration(logs)
        return logs

    def fit(self, prompts, completions=None, steps: int = 1, batch_size: int = 8) -> History:
        """``steps`` train steps, each on ``batch_size`` rows drawn without replacement from
        ``prompts`` (B, P) and, when given, ``completions`` (B, L); each step's logs go into
        :attr:`history` as an epoch, which is returned."""
        prompts, completions = self._batch(prompts, completions)
        if completions is None and self.lmbda < 1.0:
            raise ValueError(f"GKDTrainer.fit: off-policy batches (lmbda {self.lmbda} < 1) need completions")
        batch_size = min(positive_int(batch_size, "GKDTrainer.fit: batch_size"), len(prompts))
        for _ in range(positive_int(steps, "GKDTrainer.fit: steps")):
            rows = self.rng.choice(len(prompts), batch_size, replace=False)
            logs = self.train_step(prompts[rows], None if completions is None else completions[rows])
            self.history.record_epoch(len(self.history.epochs) + 1, logs)
        return self.history
