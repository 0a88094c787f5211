"""Online reinforcement learning of causal language models on their own sampled completions:
GRPO, RLOO and PPO with a value head, after Hugging Face TRL.

Each step draws a batch of prompts (B, P) (equal lengths, no padding), samples completions
with the policy (:func:`lamina.text.generate_ids`, ``do_sample`` at ``temperature``), scores
each with ``reward_fn(prompt, completion)`` (the prompt's ids and the completion's ids up to
and including its end token; a float), and updates the policy on that rollout. A
completion's tokens after its first ``eos_token_id`` are masked out of every sum.
Token log-probabilities are those of the scores divided by ``temperature``, as the samples
were drawn.

* GRPO (Shao et al., "DeepSeekMath", 2024): G completions per prompt, advantages
  A_i = (r_i - mean(r)) / (std(r) + eps) within each group (std with Bessel's correction, as
  TRL), and per token t of completion i, with rho = pi / pi_old and d = log pi_ref - log pi,

      l_it = -[min(rho A_i, clip(rho, 1 - eps_c, 1 + eps_c) A_i) - beta (e^d - d - 1)]

  (e^d - d - 1: the k3 estimator of KL(pi || pi_ref)), averaged over each completion's
  tokens, then over the completions; ``num_iterations`` updates reuse one rollout (pi_old fixed).
* RLOO (Ahmadian et al., "Back to basics", 2024): k completions per prompt, the
  KL-shaped reward R_i = r_i - beta sum_t (log pi_old - log pi_ref), the leave-one-out
  advantage A_i = R_i - mean_{j != i} R_j and the REINFORCE loss -mean_i A_i log pi(y_i | x).
* PPO (Stiennon et al. 2020, Ouyang et al. 2022): a scalar value head on the policy's final
  hidden states, per-token rewards -beta (log pi_old - log pi_ref) plus the sequence reward at the
  last token, GAE over the tokens (:func:`token_gae`), advantages whitened over the batch's
  tokens, clipped policy and value losses over ``ppo_epochs`` passes in minibatches.

Sampling and the updates run the policy in evaluation mode (dropout off, as TRL's default); the
reference, a frozen copy of the starting policy unless one is given, always is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import lamina
from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.gpt2 import GPT2
from lamina.models.llama import Llama
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam, clip_grad_norm
from lamina.train.history import History
from lamina.train.reward_model import final_hidden_states

__all__ = ["CompletionRollout", "GRPOTrainer", "PPOTrainer", "RLOOTrainer", "completion_log_probs", "completion_mask",
           "group_advantages", "grpo_loss", "k3_kl", "ppo_lm_losses", "rloo_advantages", "rloo_loss", "token_gae"]


# -- formulas --------------------------------------------------------------------------------
def completion_mask(completions, eos_token_id: int | None) -> np.ndarray:
    """(N, L) True on each completion's tokens up to and including its first ``eos_token_id``
    (every token when None)."""
    ids = np.asarray(completions)
    if ids.ndim != 2:
        raise ShapeError(f"completion_mask: expected completions (N, L), got shape {ids.shape}")
    if eos_token_id is None:
        return np.ones(ids.shape, dtype=bool)
    ended_before = np.cumsum(ids == eos_token_id, axis=1) - (ids == eos_token_id)
    return ended_before == 0


def _grouped(rewards, group_size: int, who: str) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    group_size = positive_int(group_size, f"{who}: group_size")
    if r.ndim != 1 or r.size % group_size:
        raise ShapeError(f"{who}: expected rewards (N,) with N a multiple of group_size {group_size}, got "
                         f"shape {r.shape}")
    return r.reshape(-1, group_size)


def group_advantages(rewards, group_size: int, eps: float = 1e-4) -> np.ndarray:
    """GRPO's A_i = (r_i - mean(r)) / (std(r) + eps) within consecutive groups of
    ``group_size`` rewards (std with Bessel's correction; (N,) -> (N,))."""
    r = _grouped(rewards, group_size, "group_advantages")
    if r.shape[1] < 2:
        raise ValueError("group_advantages: group_size must be >= 2 (a group's spread needs two rewards)")
    return ((r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, ddof=1, keepdims=True) + eps)).ravel()


def rloo_advantages(rewards, group_size: int) -> np.ndarray:
    """RLOO's A_i = r_i - mean_{j != i} r_j within consecutive groups of ``group_size`` rewards."""
    r = _grouped(rewards, group_size, "rloo_advantages")
    k = r.shape[1]
    if k < 2:
        raise ValueError("rloo_advantages: group_size must be >= 2 (the baseline leaves one sample out)")
    return (r - (r.sum(axis=1, keepdims=True) - r) / (k - 1)).ravel()


def k3_kl(log_probs, ref_log_probs):
    """The k3 estimator of KL(pi || pi_ref) per token: e^d - d - 1 with d = log pi_ref - log pi
    (non-negative, unbiased for samples of pi). Tensors in, a Tensor out; arrays, an array."""
    if isinstance(log_probs, Tensor):
        d = lamina.tensor(_constant(ref_log_probs), dtype=log_probs.dtype) - log_probs
        return F.exp(d) - d - 1.0
    d = np.asarray(ref_log_probs, dtype=np.float64) - np.asarray(log_probs, dtype=np.float64)
    return np.exp(d) - d - 1.0


def token_gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimates along each completion's tokens (N, L):
    delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, with V and A zero
    past the last token ``mask`` keeps (masked tokens get A = 0). Returns (A, A + V)."""
    r, v = np.asarray(rewards, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.asarray(mask, dtype=bool)
    if not r.shape == v.shape == keep.shape or r.ndim != 2:
        raise ShapeError(f"token_gae: rewards, values and mask must share one shape (N, L), got {r.shape}, "
                         f"{v.shape}, {keep.shape}")
    r, v = np.where(keep, r, 0.0), np.where(keep, v, 0.0)
    advantages = np.zeros_like(r)
    running, next_value = np.zeros(len(r)), np.zeros(len(r))
    for t in reversed(range(r.shape[1])):
        running = np.where(keep[:, t], r[:, t] + gamma * next_value - v[:, t] + gamma * lam * running, 0.0)
        next_value = v[:, t]
        advantages[:, t] = running
    return advantages, np.where(keep, advantages + v, 0.0)


def completion_log_probs(logits, sequences, prompt_length: int, temperature: float = 1.0) -> Tensor:
    """log softmax(z / temperature) of each completion token (N, L) from a causal model's scores
    ``logits`` (N, P + L, V) of ``sequences`` (N, P + L) whose first ``prompt_length`` ids are the prompt."""
    scores = _as_tensor(logits)
    ids = np.asarray(sequences)
    if scores.ndim != 3 or ids.shape != scores.shape[:2] or not 1 <= prompt_length < ids.shape[1]:
        raise ShapeError(f"completion_log_probs: expected logits (N, T, V), sequences (N, T) and 1 <= prompt_length "
                         f"< T; got {scores.shape}, {ids.shape}, prompt_length {prompt_length}")
    scores = scores[:, prompt_length - 1:-1]
    if temperature != 1.0:
        scores = scores / float(temperature)
    targets = np.ascontiguousarray(ids[:, prompt_length:, None].astype(np.int64))
    return (F.gather(scores, -1, targets) - F.logsumexp(scores, axis=-1, keepdims=True))[..., 0]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else lamina.tensor(np.asarray(x))


def _constant(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _like(x, reference: Tensor) -> Tensor:
    return lamina.tensor(_constant(x), dtype=reference.dtype)


def _masked_mean_rows(values: Tensor, mask: Tensor) -> Tensor:
    counts = np.maximum(_constant(mask).sum(axis=1), 1.0)
    return F.sum(values * mask, axis=1) / _like(counts, values)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return F.sum(values * mask) / max(float(_constant(mask).sum()), 1.0)


def _clipped_surrogate(log_probs: Tensor, old_log_probs, advantages, clip_eps: float) -> Tensor:
    ratio = F.exp(log_probs - _like(old_log_probs, log_probs))
    advantages = _like(advantages, log_probs)
    return F.minimum(ratio * advantages, F.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)


def grpo_loss(log_probs: Tensor, old_log_probs, ref_log_probs, advantages, mask, clip_eps: float = 0.2,
              kl_coef: float = 0.04) -> Tensor:
    """GRPO's loss (module docstring): ``log_probs`` (N, L) on the graph, ``old_log_probs`` and
    ``ref_log_probs`` (N, L) and ``advantages`` (N,) constants, ``mask`` (N, L) the kept tokens."""
    keep = _like(np.asarray(_constant(mask), dtype=np.float64), log_probs)
    per_token = _clipped_surrogate(log_probs, old_log_probs, _constant(advantages)[:, None], clip_eps)
    if kl_coef:
        per_token = per_token - kl_coef * k3_kl(log_probs, ref_log_probs)
    return -F.mean(_masked_mean_rows(per_token, keep))


def rloo_loss(log_probs: Tensor, advantages, mask) -> Tensor:
    """REINFORCE: -mean_i A_i sum_t mask_it log pi_it (``log_probs`` (N, L), ``advantages`` (N,))."""
    keep = _like(np.asarray(_constant(mask), dtype=np.float64), log_probs)
    return -F.mean(F.sum(log_probs * keep, axis=1) * _like(advantages, log_probs))


def ppo_lm_losses(log_probs: Tensor, old_log_probs, values: Tensor, old_values, advantages, returns, mask,
                  clip_eps: float = 0.2, value_clip: float | None = 0.2) -> tuple[Tensor, Tensor]:
    """PPO's (policy loss, value loss) over the kept tokens (all (N, L)): the policy loss
    -masked_mean(min(rho A, clip(rho) A)) and the value loss 1/2 masked_mean(max((V - R)^2,
    (V_old + clip(V - V_old, -c, c) - R)^2)) (the plain squared error when ``value_clip`` is None)."""
    keep = _like(np.asarray(_constant(mask), dtype=np.float64), log_probs)
    policy_loss = -_masked_mean(_clipped_surrogate(log_probs, old_log_probs, advantages, clip_eps), keep)
    target = _like(returns, values)
    squared = (values - target) ** 2
    if value_clip is not None:
        old = _like(old_values, values)
        clipped = old + F.clip(values - old, -value_clip, value_clip)
        squared = F.maximum(squared, (clipped - target) ** 2)
    return policy_loss, 0.5 * _masked_mean(squared, keep)


# -- rollouts --------------------------------------------------------------------------------
@dataclass
class CompletionRollout:
    """One batch of sampled completions: ``prompts`` (B, P), ``sequences`` (B G, P + L) (rows
    i G .. i G + G - 1 continue prompt i), ``completions`` (B G, L), ``mask`` (B G, L) (tokens up
    to the first end token), ``rewards`` (B G,), ``log_probs`` and ``ref_log_probs`` (B G, L),
    the sampling policy's and the reference's token log-probabilities."""

    prompts: np.ndarray
    sequences: np.ndarray
    completions: np.ndarray
    mask: np.ndarray
    rewards: np.ndarray
    log_probs: np.ndarray
    ref_log_probs: np.ndarray
    group_size: int

    @property
    def kl(self) -> float:
        """The mean over completions of sum_t (log pi - log pi_ref): a sample estimate of KL(pi || pi_ref)."""
        return float(((self.log_probs - self.ref_log_probs) * self.mask).sum(axis=1).mean())


def _positive(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{who}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{who}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class _OnlineTrainer:
    """What the three trainers share: the reference, sampling, scoring, the optimizer and fit."""

    who = "OnlineTrainer"

    def __init__(self, policy: Module, reward_fn: Callable, reference: Module | None = None, group_size: int = 4,
                 max_new_tokens: int = 16, temperature: float = 1.0, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, optimizer=None, lr: float = 1e-4, clip_norm: float | None = None,
                 seed: int | None = None):
        if not isinstance(policy, Module):
            raise TypeError(f"{self.who}: the policy must be a Module, got {type(policy).__name__}")
        if not policy.built:
            raise ValueError(f"{self.who}: the policy is not built; start from a (trained) built model, which also "
                             "serves as the reference")
        if not callable(getattr(policy, "generate", None)):
            raise TypeError(f"{self.who}: the policy must sample with generate (a causal language model with "
                            f"lamina.text.GenerationMixin, such as GPT2 or Llama), got {type(policy).__name__}")
        if not callable(reward_fn):
            raise TypeError(f"{self.who}: reward_fn must be callable (prompt ids, completion ids) -> float")
        if reference is policy:
            raise ValueError(f"{self.who}: the reference must not be the policy being trained")
        self.policy = policy
        self.reference = copy.deepcopy(policy) if reference is None else reference
        self.reference.freeze()
        self.reference.eval()
        self.reward_fn = reward_fn
        self.group_size = positive_int(group_size, f"{self.who}: group_size")
        if self.group_size < 2:
            raise ValueError(f"{self.who}: group_size must be >= 2, got {group_size}")
        self.max_new_tokens = positive_int(max_new_tokens, f"{self.who}: max_new_tokens")
        self.temperature = _positive(temperature, "temperature", self.who)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.optimizer = optimizer
        self.lr = _positive(lr, "lr", self.who)
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm", self.who)
        self.rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        self.history = History()
        self.steps = 0

    # -- sampling and scoring --------------------------------------------------------------
    def _prompts(self, prompts) -> np.ndarray:
        ids = np.asarray(_constant(prompts))
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise ShapeError(f"{self.who}: prompts must be integer token ids (B, P) of one length P >= 1, got "
                             f"{ids.dtype} {ids.shape}")
        return ids.astype(np.int64)

    def log_probs(self, model: Module, sequences: np.ndarray, prompt_length: int) -> Tensor:
        """The completion tokens' log-probabilities (N, L) under ``model`` (on the graph)."""
        return completion_log_probs(model(lamina.tensor(sequences)), sequences, prompt_length, self.temperature)

    def rollout(self, prompts) -> CompletionRollout:
        """Sample ``group_size`` completions of each prompt, score them, and record the sampling
        policy's and the reference's log-probabilities (no gradients)."""
        prompts = self._prompts(prompts)
        with no_grad(), evaluation_mode(self.policy):
            sequences = self.policy.generate(prompts, max_new_tokens=self.max_new_tokens, do_sample=True,
                                             temperature=self.temperature, num_return_sequences=self.group_size,
                                             eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
                                             generator=self.rng)
            length = prompts.shape[1]
            completions = sequences[:, length:]
            mask = completion_mask(completions, self.eos_token_id)
            log_probs = self.log_probs(self.policy, sequences, length).numpy()
            ref_log_probs = self.log_probs(self.reference, sequences, length).numpy()
        rows = np.repeat(np.arange(len(prompts)), self.group_size)
        rewards = np.array([float(self.reward_fn(prompts[i], completions[n][mask[n]])) for n, i in enumerate(rows)])
        return CompletionRollout(prompts, sequences, completions, mask, rewards, log_probs.astype(np.float64),
                       ref_log_probs.astype(np.float64), self.group_size)

    # -- updates ---------------------------------------------------------------------------
    def _parameters(self) -> list:
        return list(self.policy.parameters(trainable_only=True))

    def _step(self, loss: Tensor) -> None:
        if self.optimizer is None:
            self.optimizer = Adam(self._parameters(), lr=self.lr)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm(self._parameters(), self.clip_norm)
        self.optimizer.step()

    def update(self, rollout: CompletionRollout) -> dict[str, float]:
        """The optimizer steps on one rollout; returns the logged quantities."""
        raise NotImplementedError

    def train_step(self, prompts) -> dict[str, float]:
        """One rollout of ``prompts`` and its updates; logs ``reward`` (the mean sampled reward),
        ``kl`` (:attr:`CompletionRollout.kl`), ``completion_length`` and the trainer's losses."""
        rollout = self.rollout(prompts)
        with evaluation_mode(self.policy):
            logs = self.update(rollout)
        self.steps += 1
        logs = {"reward": float(rollout.rewards.mean()), "kl": rollout.kl,
                "completion_length": float(rollout.mask.sum(axis=1).mean()), **logs}
        self.history.record_iteration(logs)
        return logs

    def fit(self, prompts, steps: int = 1, batch_size: int = 8) -> History:
        """``steps`` train steps, each on ``batch_size`` prompts drawn without replacement from
        ``prompts`` (B, P); each step's logs go into :attr:`history` as an epoch, which is returned."""
        prompts = self._prompts(prompts)
        batch_size = min(positive_int(batch_size, f"{self.who}.fit: batch_size"), len(prompts))
        for _ in range(positive_int(steps, f"{self.who}.fit: steps")):
            logs = self.train_step(prompts[self.rng.choice(len(prompts), batch_size, replace=False)])
            self.history.record_epoch(len(self.history.epochs) + 1, logs)
        return self.history


class GRPOTrainer(_OnlineTrainer):
    """Group relative policy optimization of the causal language model ``policy`` (built; it
    must offer ``generate``, as GPT2 and Llama do): see the module docstring.

    ``reward_fn(prompt, completion)`` -> float; ``reference``: the frozen pi_ref (None: a frozen
    copy of the policy as it is now); ``group_size`` G completions per prompt; ``clip_eps``;
    ``kl_coef`` beta; ``num_iterations`` updates per rollout; ``eps`` in the advantages'
    denominator; ``max_new_tokens``, ``temperature``, ``eos_token_id``, ``pad_token_id``: the
    sampling's; ``optimizer`` (None: Adam at ``lr``), ``clip_norm``; ``seed`` for the draws.
    """

    who = "GRPOTrainer"

    def __init__(self, policy: Module, reward_fn: Callable, reference: Module | None = None, group_size: int = 4,
                 clip_eps: float = 0.2, kl_coef: float = 0.04, num_iterations: int = 1, eps: float = 1e-4,
                 max_new_tokens: int = 16, temperature: float = 1.0, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, optimizer=None, lr: float = 1e-4, clip_norm: float | None = None,
                 seed: int | None = None):
        super().__init__(policy, reward_fn, reference, group_size, max_new_tokens, temperature, eos_token_id,
                         pad_token_id, optimizer, lr, clip_norm, seed)
        self.clip_eps = _positive(clip_eps, "clip_eps", self.who)
        self.kl_coef = _non_negative(kl_coef, "kl_coef", self.who)
        self.num_iterations = positive_int(num_iterations, f"{self.who}: num_iterations")
        self.eps = _positive(eps, "eps", self.who)

    def loss(self, rollout: CompletionRollout) -> Tensor:
        """GRPO's loss of the current policy on ``rollout`` (on the graph)."""
        advantages = group_advantages(rollout.rewards, rollout.group_size, self.eps)
        log_probs = self.log_probs(self.policy, rollout.sequences, rollout.prompts.shape[1])
        return grpo_loss(log_probs, rollout.log_probs, rollout.ref_log_probs, advantages, rollout.mask,
                         self.clip_eps, self.kl_coef)

    def update(self, rollout: CompletionRollout) -> dict[str, float]:
        losses = []
        for _ in range(self.num_iterations):
            loss = self.loss(rollout)
            self._step(loss)
            losses.append(float(loss.item()))
        return {"loss": float(np.mean(losses))}


class RLOOTrainer(_OnlineTrainer):
    """REINFORCE leave-one-out of the causal language model ``policy`` (see the module
    docstring): ``group_size`` k samples per prompt, ``kl_coef`` beta on the sequence's summed
    token log-ratio; no value network. The other arguments are :class:`GRPOTrainer`'s."""

    who = "RLOOTrainer"

    def __init__(self, policy: Module, reward_fn: Callable, reference: Module | None = None, group_size: int = 4,
                 kl_coef: float = 0.05, max_new_tokens: int = 16, temperature: float = 1.0,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, optimizer=None, lr: float = 1e-4,
                 clip_norm: float | None = None, seed: int | None = None):
        super().__init__(policy, reward_fn, reference, group_size, max_new_tokens, temperature, eos_token_id,
                         pad_token_id, optimizer, lr, clip_norm, seed)
        self.kl_coef = _non_negative(kl_coef, "kl_coef", self.who)

    def advantages(self, rollout: CompletionRollout) -> np.ndarray:
        """The leave-one-out advantages (N,) of the KL-shaped rewards."""
        log_ratio = ((rollout.log_probs - rollout.ref_log_probs) * rollout.mask).sum(axis=1)
        return rloo_advantages(rollout.rewards - self.kl_coef * log_ratio, rollout.group_size)

    def loss(self, rollout: CompletionRollout) -> Tensor:
        log_probs = self.log_probs(self.policy, rollout.sequences, rollout.prompts.shape[1])
        return rloo_loss(log_probs, self.advantages(rollout), rollout.mask)

    def update(self, rollout: CompletionRollout) -> dict[str, float]:
        loss = self.loss(rollout)
        self._step(loss)
        return {"loss": float(loss.item())}


def _hidden_and_logits(model: Module, ids: np.ndarray) -> tuple[Tensor, Tensor]:
    hidden = final_hidden_states(model, lamina.tensor(ids))
    if isinstance(model, Llama):
        return hidden, model.logits(hidden)
    return hidden, F.matmul(hidden, F.transpose(model.wte.weight, 1, 0))


class PPOTrainer(_OnlineTrainer):
    """PPO of a causal language model ``policy`` (a GPT2 or Llama) with a scalar value head
    :attr:`value_head` (a Dense(1) on the final hidden state, trained with the policy): see the
    module docstring. ``kl_coef`` beta of the per-token KL penalty; ``gamma``, ``lam``: GAE's;
    ``clip_eps`` the ratio's clip, ``value_clip`` the values' (None: unclipped), ``vf_coef`` the
    value loss's weight; ``ppo_epochs`` passes over the rollout in ``num_minibatches``
    minibatches of completions. ``group_size`` completions are sampled per prompt. The other
    arguments are :class:`GRPOTrainer`'s.
    """

    who = "PPOTrainer"

    def __init__(self, policy: Module, reward_fn: Callable, reference: Module | None = None, group_size: int = 4,
                 kl_coef: float = 0.05, gamma: float = 1.0, lam: float = 0.95, clip_eps: float = 0.2,
                 value_clip: float | None = 0.2, vf_coef: float = 0.1, ppo_epochs: int = 4, num_minibatches: int = 1,
                 max_new_tokens: int = 16, temperature: float = 1.0, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, optimizer=None, lr: float = 1e-4, clip_norm: float | None = None,
                 seed: int | None = None):
        if not isinstance(policy, GPT2 | Llama):
            raise TypeError(f"{self.who}: the value head reads a GPT2's or Llama's final hidden states; got a "
                            f"{type(policy).__name__}")
        super().__init__(policy, reward_fn, reference, group_size, max_new_tokens, temperature, eos_token_id,
                         pad_token_id, optimizer, lr, clip_norm, seed)
        self.kl_coef = _non_negative(kl_coef, "kl_coef", self.who)
        self.gamma = _non_negative(gamma, "gamma", self.who)
        self.lam = _non_negative(lam, "lam", self.who)
        self.clip_eps = _positive(clip_eps, "clip_eps", self.who)
        self.value_clip = None if value_clip is None else _positive(value_clip, "value_clip", self.who)
        self.vf_coef = _non_negative(vf_coef, "vf_coef", self.who)
        self.ppo_epochs = positive_int(ppo_epochs, f"{self.who}: ppo_epochs")
        self.num_minibatches = positive_int(num_minibatches, f"{self.who}: num_minibatches")
        self.value_head = Dense(1, kernel_init=initializers.zeros)
        with no_grad():
            self.value_head(lamina.tensor(np.zeros((1, _hidden_size(policy)), dtype=np.float32)))

    def _parameters(self) -> list:
        return [*self.policy.parameters(trainable_only=True), *self.value_head.parameters(trainable_only=True)]

    def evaluate(self, sequences: np.ndarray, prompt_length: int) -> tuple[Tensor, Tensor]:
        """(log-probabilities, values) of the completion tokens (N, L) in one pass; value t is read
        at the state that predicts token t."""
        hidden, logits = _hidden_and_logits(self.policy, sequences)
        log_probs = completion_log_probs(logits, sequences, prompt_length, self.temperature)
        values = self.value_head(hidden[:, prompt_length - 1:-1])[..., 0]
        return log_probs, values

    def token_rewards(self, rollout: CompletionRollout) -> np.ndarray:
        """-beta (log pi_old - log pi_ref) per kept token, plus the sequence reward at each
        completion's last kept token (N, L)."""
        rewards = -self.kl_coef * (rollout.log_probs - rollout.ref_log_probs) * rollout.mask
        last = np.maximum(rollout.mask.sum(axis=1) - 1, 0)
        rewards[np.arange(len(last)), last] += rollout.rewards
        return rewards

    def update(self, rollout: CompletionRollout) -> dict[str, float]:
        length = rollout.prompts.shape[1]
        with no_grad():
            old_values = self.evaluate(rollout.sequences, length)[1].numpy().astype(np.float64)
        advantages, returns = token_gae(self.token_rewards(rollout), old_values, rollout.mask, self.gamma, self.lam)
        kept = advantages[rollout.mask]
        advantages = np.where(rollout.mask, (advantages - kept.mean()) / (kept.std() + 1e-8), 0.0)
        policy_losses, value_losses = [], []
        for _ in range(self.ppo_epochs):
            for rows in np.array_split(self.rng.permutation(len(rollout.sequences)), self.num_minibatches):
                log_probs, values = self.evaluate(rollout.sequences[rows], length)
                policy_loss, value_loss = ppo_lm_losses(
                    log_probs, rollout.log_probs[rows], values, old_values[rows], advantages[rows], returns[rows],
                    rollout.mask[rows], self.clip_eps, self.value_clip)
                self._step(policy_loss + self.vf_coef * value_loss)
                policy_losses.append(float(policy_loss.item()))
                value_losses.append(float(value_loss.item()))
        return {"policy_loss": float(np.mean(policy_losses)), "value_loss": float(np.mean(value_losses))}


def _hidden_size(model: Module) -> int:
    return model.n_embd if isinstance(model, GPT2) else model.hidden_size
