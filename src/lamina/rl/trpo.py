"""Trust region policy optimization (Schulman et al., 2015) with GAE advantages, for discrete
(categorical) and continuous (diagonal normal) actions. Each update solves

    maximize_theta  L(theta) = mean_t(pi_theta(a_t | s_t) / pi_old(a_t | s_t) A_t)
    subject to      mean_t KL(pi_old(. | s_t) || pi_theta(. | s_t)) <= delta

approximately: with g = grad L at theta_old and F the Fisher matrix (the Hessian of the mean KL
at theta_old, reached by Fisher-vector products through a double backward, plus damping), the
direction s = F^-1 g comes from conjugate gradient, the full step is sqrt(2 delta / s^T F s) s,
and a backtracking line search halves it until the KL bound holds and L improves by at least
``accept_ratio`` of the linear prediction (else theta stays). The value function is fit by a
few epochs of Adam on the GAE returns. Rollouts, GAE and the actor-critic are PPO's."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, grad, no_grad, tensor
from lamina.backend import manual_seed, to_numpy
from lamina.errors import ShapeError
from lamina.functional import exp, log_softmax, mean
from lamina.nn.flat_parameters import parameters_to_vector, vector_to_parameters
from lamina.rl.env import Env
from lamina.rl.networks import obs_tensor
from lamina.rl.ppo import PPO, ActorCritic, _vector_env, train_ppo, value_loss
from lamina.rl.vector import VectorEnv

__all__ = ["TRPOAgent", "categorical_kl", "conjugate_gradient", "diagonal_gaussian_kl", "fisher_vector_product",
           "flat_gradient", "get_flat_parameters", "policy_mean_kl", "policy_parameters", "set_flat_parameters",
           "trpo_line_search", "train_trpo"]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else tensor(numpy.asarray(x))


def categorical_kl(logits_p, logits_q) -> Tensor:
    """KL(p || q) = sum_k p_k (log p_k - log q_k) per row, p = softmax(logits_p), q = softmax(logits_q)."""
    logits_p, logits_q = _as_tensor(logits_p), _as_tensor(logits_q)
    if logits_p.shape != logits_q.shape:
        raise ShapeError(f"categorical_kl: logits_p and logits_q must have one shape, got {logits_p.shape} and "
                         f"{logits_q.shape}")
    log_p, log_q = log_softmax(logits_p, axis=-1), log_softmax(logits_q, axis=-1)
    return (exp(log_p) * (log_p - log_q)).sum(axis=-1)


def diagonal_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> Tensor:
    """KL(N(mu_p, diag sigma_p^2) || N(mu_q, diag sigma_q^2)) per row, summed over the last axis:

        sum_i log sigma_q,i - log sigma_p,i + (sigma_p,i^2 + (mu_p,i - mu_q,i)^2) / (2 sigma_q,i^2) - 1/2

    The log standard deviations broadcast against the means (a state-independent ``log_std``)."""
    mean_p, log_std_p, mean_q, log_std_q = (_as_tensor(x) for x in (mean_p, log_std_p, mean_q, log_std_q))
    if mean_p.shape != mean_q.shape or mean_p.ndim == 0:
        raise ShapeError(f"diagonal_gaussian_kl: mean_p and mean_q must have one shape (batch..., action_dim), got "
                         f"{mean_p.shape} and {mean_q.shape}")
    for name, s in (("log_std_p", log_std_p), ("log_std_q", log_std_q)):
        if s.ndim > mean_p.ndim or (s.ndim and s.shape[-1] != mean_p.shape[-1]):
            raise ShapeError(f"diagonal_gaussian_kl: {name} of shape {s.shape} does not broadcast against the "
                             f"means of shape {mean_p.shape}")
    diff = mean_p - mean_q
    terms = (log_std_q - log_std_p + (exp(2.0 * log_std_p) + diff * diff) * (0.5 * exp(-2.0 * log_std_q)) - 0.5)
    return terms.sum(axis=-1)


def policy_parameters(policy: ActorCritic) -> list[Tensor]:
    """The policy's parameters theta: the actor's, and ``log_std`` for continuous actions (not the critic's)."""
    params = list(policy.actor.parameters())
    return params + [policy.log_std] if policy.continuous else params


def get_flat_parameters(params: Sequence[Tensor]) -> numpy.ndarray:
    """The parameters joined into one float64 vector (copies; row-major, in order)."""
    with no_grad():
        return numpy.asarray(to_numpy(parameters_to_vector(params).data), dtype=numpy.float64)


def set_flat_parameters(params: Sequence[Tensor], vector) -> None:
    """Write a vector laid out as :func:`get_flat_parameters` gives it into the parameters, in place."""
    vector_to_parameters(numpy.asarray(vector, dtype=params[0].dtype), params)


def flat_gradient(output: Tensor, params: Sequence[Tensor]) -> numpy.ndarray:
    """d output / d theta as one float64 vector (zeros for parameters ``output`` does not use)."""
    grads = grad(output, list(params), allow_unused=True)
    return numpy.concatenate([numpy.zeros(p.size) if g is None else numpy.asarray(to_numpy(g), numpy.float64).ravel()
                              for g, p in zip(grads, params)])


def policy_mean_kl(policy: ActorCritic, obs: Tensor, old_output, old_log_std=None) -> Tensor:
    """mean_t KL(pi_old(. | s_t) || pi_theta(. | s_t)) on the graph of theta; ``old_output`` is
    the old actor's output on ``obs`` (logits or means) and ``old_log_std`` its log_std."""
    output = policy.actor(obs)
    if policy.continuous:
        if old_log_std is None:
            raise ValueError("policy_mean_kl: a continuous policy needs old_log_std")
        return mean(diagonal_gaussian_kl(old_output, old_log_std, output, policy.log_std))
    return mean(categorical_kl(old_output, output))


def fisher_vector_product(policy: ActorCritic, obs: Tensor, old_output=None, old_log_std=None,
                          damping: float = 0.1) -> Callable[[numpy.ndarray], numpy.ndarray]:
    """v -> (F + damping I) v, F = d^2/dtheta^2 mean KL(pi_old || pi_theta) at theta = theta_old
    (the Fisher information of the policy), by differentiating (d KL / d theta) . v once more.
    ``old_output``/``old_log_std`` default to the policy's current ones (theta_old = theta)."""
    params = policy_parameters(policy)
    if old_output is None:
        with no_grad():
            old_output = policy.actor(obs).numpy()
        old_log_std = numpy.array(policy.log_std.data) if policy.continuous else None
    kl = policy_mean_kl(policy, obs, old_output, old_log_std)
    grads = grad(kl, params, create_graph=True)
    flat = parameters_to_vector(grads)
    size = sum(p.size for p in params)

    def fvp(v: numpy.ndarray) -> numpy.ndarray:
        v = numpy.asarray(v, dtype=numpy.float64)
        if v.shape != (size,):
            raise ShapeError(f"fisher_vector_product: expected a vector of {size} values (the policy's parameters), "
                             f"got shape {v.shape}")
        gv = (flat * tensor(v.astype(flat.dtype))).sum()
        hv = grad(gv, params, retain_graph=True, allow_unused=True)
        product = numpy.concatenate([numpy.zeros(p.size) if h is None else numpy.asarray(to_numpy(h), numpy.float64)
                                     .ravel() for h, p in zip(hv, params)])
        return product + damping * v

    return fvp


def conjugate_gradient(fvp: Callable[[numpy.ndarray], numpy.ndarray], b, iters: int = 10,
                       residual_tol: float = 1e-10) -> numpy.ndarray:
    """x ~ A^-1 b for a symmetric positive definite A given as the product ``fvp(v) = A v``:
    from x = 0, r = p = b, repeat alpha = r.r / p.A p, x += alpha p, r -= alpha A p,
    p = r + (r_new.r_new / r.r) p, for ``iters`` steps or until r.r < ``residual_tol``."""
    b = numpy.asarray(b, dtype=numpy.float64)
    if b.ndim != 1:
        raise ShapeError(f"conjugate_gradient: b must be a vector, got shape {b.shape}")
    x, r, p = numpy.zeros_like(b), b.copy(), b.copy()
    rr = float(r @ r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = numpy.asarray(fvp(p), dtype=numpy.float64)
        alpha = rr / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        new_rr = float(r @ r)
        p = r + (new_rr / rr) * p
        rr = new_rr
    return x


def trpo_line_search(objective: Callable[[numpy.ndarray], float], constraint: Callable[[numpy.ndarray], float],
                     theta, full_step, expected_improvement: float, max_constraint: float,
                     accept_ratio: float = 0.1, max_backtracks: int = 10) -> tuple[numpy.ndarray, float]:
    """Backtracking from theta + full_step: tries the fractions 1, 1/2, ..., 2^-max_backtracks of
    the step and keeps the first where ``constraint`` <= ``max_constraint``, ``objective`` rose,
    and the rise is at least ``accept_ratio`` times ``expected_improvement`` (the rise predicted
    by the gradient for the full step) scaled by the fraction. Returns (theta_new, fraction),
    or (theta, 0.0) when no fraction passes."""
    theta, full_step = numpy.asarray(theta, numpy.float64), numpy.asarray(full_step, numpy.float64)
    if theta.shape != full_step.shape:
        raise ShapeError(f"trpo_line_search: theta and full_step must have one shape, got {theta.shape} and "
                         f"{full_step.shape}")
    base = objective(theta)
    for k in range(max_backtracks + 1):
        fraction = 0.5 ** k
        candidate = theta + fraction * full_step
        improvement = objective(candidate) - base
        if (constraint(candidate) <= max_constraint and improvement > 0.0
                and improvement >= accept_ratio * expected_improvement * fraction):
            return candidate, fraction
    return theta.copy(), 0.0


class TRPOAgent(PPO):
    """Collects ``n_steps`` steps from each of a vector of environments (:meth:`PPO.collect`),
    takes one trust-region step on the policy (the module docstring's recipe: ``max_kl`` delta,
    ``damping``, ``cg_iters`` conjugate-gradient steps, the line search's ``accept_ratio`` and
    ``max_backtracks``), then fits the value network by ``vf_epochs`` passes of minibatches of
    ``vf_minibatch_size`` with Adam (learning rate ``vf_lr``) on 1/2 (V - R)^2."""

    algorithm = "trpo"

    def __init__(self, policy: ActorCritic, max_kl: float = 0.01, damping: float = 0.1, cg_iters: int = 10,
                 accept_ratio: float = 0.1, max_backtracks: int = 10, vf_lr: float = 1e-3, vf_epochs: int = 5,
                 vf_minibatch_size: int = 128, n_steps: int = 512, gamma: float = 0.99, gae_lambda: float = 0.95,
                 normalize_advantages: bool = True, seed: int | None = None):
        if not max_kl > 0.0:
            raise ValueError(f"TRPOAgent: max_kl must be positive, got {max_kl!r}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"TRPOAgent: n_steps must be a positive int, got {n_steps!r}")
        super().__init__(policy, lr=vf_lr, n_steps=n_steps, n_epochs=vf_epochs, minibatch_size=vf_minibatch_size,
                         gamma=gamma, gae_lambda=gae_lambda, normalize_advantages=normalize_advantages, seed=seed)
        self.optimizer = optim.Adam(policy.critic.parameters(), lr=vf_lr, eps=1e-5)
        self.max_kl, self.damping, self.cg_iters = max_kl, damping, cg_iters
        self.accept_ratio, self.max_backtracks = accept_ratio, max_backtracks

    @classmethod
    def for_env(cls, env: Env, seed: int | None = None, hidden: Sequence[int] = (64, 64), **settings) -> TRPOAgent:
        """A TRPO agent with a new actor-critic sized for ``env``'s spaces."""
        policy = ActorCritic(env.observation_space.shape[0], env.action_space, hidden=hidden)
        return cls(policy, seed=seed, **settings)

    def policy_step(self, obs: Tensor, actions, old_log_prob, advantages) -> dict[str, float]:
        """One trust-region step on the policy's parameters; returns the surrogate's rise, the
        mean KL after the step and the line search's accepted fraction (0: theta unchanged)."""
        params = policy_parameters(self.policy)
        theta_old = get_flat_parameters(params)
        with no_grad():
            old_output = self.policy.actor(obs).numpy()
        old_log_std = numpy.array(self.policy.log_std.data) if self.policy.continuous else None
        old_log_prob = tensor(numpy.asarray(old_log_prob, dtype=obs.dtype))
        advantages = tensor(numpy.asarray(advantages, dtype=obs.dtype))

        def surrogate() -> Tensor:
            log_prob, _ = self.policy.log_prob_entropy(obs, actions)
            return mean(exp(log_prob - old_log_prob) * advantages)

        def at(theta, fn) -> float:
            set_flat_parameters(params, theta)
            with no_grad():
                return float(fn().item())

        g = flat_gradient(surrogate(), params)
        fvp = fisher_vector_product(self.policy, obs, old_output, old_log_std, self.damping)
        direction = conjugate_gradient(fvp, g, self.cg_iters)
        curvature = float(direction @ fvp(direction))
        if not (numpy.all(numpy.isfinite(direction)) and curvature > 0.0):
            return {"improvement": 0.0, "kl": 0.0, "step_fraction": 0.0}
        full_step = math.sqrt(2.0 * self.max_kl / curvature) * direction
        base = at(theta_old, surrogate)
        theta, fraction = trpo_line_search(
            lambda th: at(th, surrogate), lambda th: at(th, lambda: policy_mean_kl(self.policy, obs, old_output,
                                                                                   old_log_std)),
            theta_old, full_step, float(g @ full_step), self.max_kl, self.accept_ratio, self.max_backtracks)
        set_flat_parameters(params, theta)
        with no_grad():
            kl = float(policy_mean_kl(self.policy, obs, old_output, old_log_std).item())
            improvement = float(surrogate().item()) - base
        return {"improvement": improvement, "kl": kl, "step_fraction": fraction}

    def fit_value(self, obs: numpy.ndarray, returns: numpy.ndarray) -> float:
        """``n_epochs`` passes of shuffled minibatches of Adam on 1/2 mean((V - R)^2); the last pass's mean loss."""
        losses: list[float] = []
        for _ in range(self.n_epochs):
            losses = []
            order = self.rng.permutation(len(obs))
            for start in range(0, len(obs), self.minibatch_size):
                index = order[start:start + self.minibatch_size]
                loss = value_loss(self.policy.value(obs_tensor(obs[index])), returns[index])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
        return float(numpy.mean(losses))

    def update(self, rollout: dict) -> dict[str, float]:
        """The policy's trust-region step, then the value fit, on one rollout."""
        flat = {key: value.reshape(-1, *value.shape[2:]) for key, value in rollout.items()}
        advantages = flat["advantages"]
        if self.normalize_advantages and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        stats = self.policy_step(obs_tensor(flat["obs"]), flat["actions"], flat["log_probs"], advantages)
        stats["value_loss"] = self.fit_value(flat["obs"], flat["returns"])
        return stats


def train_trpo(env: str | Env | Callable[[], Env] | VectorEnv, total_steps: int = 50000, num_envs: int = 4,
               trpo: TRPOAgent | None = None, seed: int | None = None, hidden: Sequence[int] = (64, 64),
               **trpo_kwargs) -> list[float]:
    """Train with TRPO on ``num_envs`` copies of ``env`` (as :func:`train_ppo` takes it) for
    about ``total_steps`` environment steps in all. ``trpo`` defaults to
    ``TRPOAgent(ActorCritic(...), seed=seed, **trpo_kwargs)``. Returns the return of every
    finished episode, in the order they finished."""
    venv = _vector_env(env, num_envs)
    if trpo is None:
        if seed is not None:
            manual_seed(seed)
        policy = ActorCritic(venv.single_observation_space.shape[0], venv.single_action_space, hidden=hidden)
        trpo = TRPOAgent(policy, seed=seed, **trpo_kwargs)
    elif trpo_kwargs:
        raise TypeError(f"train_trpo: TRPO settings {sorted(trpo_kwargs)} given with a ready TRPOAgent")
    return train_ppo(venv, total_steps=total_steps, num_envs=venv.num_envs, ppo=trpo, seed=seed)
