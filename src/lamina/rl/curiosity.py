"""Curiosity: intrinsic rewards for exploration. Random Network Distillation (Burda et al., 2019)
rewards the error of a trained predictor of a fixed random network's features; the Intrinsic
Curiosity Module (Pathak et al., 2017) rewards the error of a forward model in the feature space
of an inverse dynamics model. Running normalisers of observations and of intrinsic rewards are
here too; :mod:`lamina.rl.exploration` runs them inside PPO."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina.autograd import Tensor, tensor
from lamina.backend import get_default_dtype
from lamina.errors import ShapeError
from lamina.functional import concat, log_softmax, mean
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.networks import mlp, obs_tensor

__all__ = ["ICMModule", "RNDModule", "RewardNormalizer", "RunningMeanStd", "icm_losses"]


class RunningMeanStd:
    """The mean and (population) variance of every entry of a stream of batches, merged batch by
    batch (Chan et al.): with n, mu, s^2 so far and a batch of m rows with mean mu_b and variance
    s_b^2, delta = mu_b - mu and

        mu <- mu + delta m / (n + m)
        s^2 <- (n s^2 + m s_b^2 + delta^2 n m / (n + m)) / (n + m)

    ``count`` starts at ``epsilon`` (mean 0, variance 1) so that the first division is safe."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.shape = tuple(shape)
        self.mean = numpy.zeros(self.shape)
        self.var = numpy.ones(self.shape)
        self.count = float(epsilon)

    def update(self, batch) -> None:
        batch = numpy.asarray(batch, dtype=numpy.float64)
        if batch.shape[1:] != self.shape:
            raise ShapeError(f"RunningMeanStd.update: expected batches of shape (rows, *{self.shape}), "
                             f"got {batch.shape}")
        m = len(batch)
        if m == 0:
            return
        delta = batch.mean(axis=0) - self.mean
        total = self.count + m
        self.mean = self.mean + delta * m / total
        self.var = (self.count * self.var + m * batch.var(axis=0) + delta ** 2 * self.count * m / total) / total
        self.count = total

    @property
    def std(self) -> numpy.ndarray:
        return numpy.sqrt(self.var)

    def normalize(self, x, clip: float | None = 5.0, eps: float = 1e-8) -> numpy.ndarray:
        """(x - mu) / sqrt(s^2 + eps), clipped to [-clip, clip] when ``clip`` is given."""
        out = (numpy.asarray(x, dtype=numpy.float64) - self.mean) / numpy.sqrt(self.var + eps)
        return numpy.clip(out, -clip, clip) if clip is not None else out

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = numpy.array(state["mean"]), numpy.array(state["var"]), float(state["count"])


class RewardNormalizer:
    """Divides intrinsic rewards by a running standard deviation of the discounted intrinsic
    return of each environment, R_t = gamma R_{t-1} + r_t (never reset at episode ends), as RND
    does: the scale of the rewards is then about the same whatever the module's error scale."""

    def __init__(self, num_envs: int, gamma: float = 0.99):
        self.gamma = gamma
        self.returns = numpy.zeros(num_envs)
        self.stats = RunningMeanStd(())

    def __call__(self, rewards) -> numpy.ndarray:
        """``rewards`` of shape (T, num_envs): feed the running returns, then r / std(R)."""
        rewards = numpy.asarray(rewards, dtype=numpy.float64)
        if rewards.ndim != 2 or rewards.shape[1] != len(self.returns):
            raise ShapeError(f"RewardNormalizer: expected rewards of shape (T, {len(self.returns)}), "
                             f"got {rewards.shape}")
        discounted = numpy.empty_like(rewards)
        for t, row in enumerate(rewards):
            self.returns = self.gamma * self.returns + row
            discounted[t] = self.returns
        self.stats.update(discounted.reshape(-1))
        return rewards / (self.stats.std + 1e-8)


def _check_obs(who: str, obs: Tensor, obs_dim: int) -> None:
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ShapeError(f"{who}: expected observations of shape (batch, {obs_dim}), got {tuple(obs.shape)}")


@register_with_arguments
class RNDModule(Module):
    """Random Network Distillation: a fixed, randomly initialised target network f and a
    predictor f_hat trained to match it on the observations seen; the intrinsic reward of a
    (normalised) observation s' is the prediction error

        r_int = ||f_hat(s') - f(s')||^2

    high on states unlike those trained on. The predictor is one layer deeper than the target,
    as in the paper. Only :meth:`predictor_parameters` are to be trained."""

    def __init__(self, obs_dim: int, feature_dim: int = 32, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.obs_dim = obs_dim
        self.target = mlp(obs_dim, hidden, feature_dim, activation="relu", kernel_init="orthogonal")
        self.predictor = mlp(obs_dim, (*hidden, *hidden[-1:]), feature_dim, activation="relu",
                             kernel_init="orthogonal")
        self.built = True

    def predictor_parameters(self) -> list:
        return list(self.predictor.parameters())

    def forward(self, obs) -> Tensor:
        """Per-row squared errors ||f_hat(s) - f(s)||^2, shape (batch,); no gradient reaches f."""
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        _check_obs("RNDModule", obs, self.obs_dim)
        return ((self.predictor(obs) - self.target(obs).detach()) ** 2).sum(axis=-1)


@register_with_arguments
class ICMModule(Module):
    """The Intrinsic Curiosity Module: a feature encoder phi, an inverse model g predicting a_t
    from (phi(s_t), phi(s_{t+1})) and a forward model f predicting phi(s_{t+1}) from
    (phi(s_t), a_t) (one-hot). With phi_hat = f(phi(s_t), a_t):

        L_I = cross-entropy(g(phi(s_t), phi(s_{t+1})), a_t)
        L_F = 1/2 ||phi_hat - phi(s_{t+1})||^2          (the target phi(s_{t+1}) held fixed)
        loss = (1 - beta) L_I + beta L_F,   r_int = eta / 2 ||phi_hat - phi(s_{t+1})||^2

    The features are shaped mostly by the inverse loss, so they keep what the agent's actions
    control; L_F's gradient reaches phi only through phi(s_t), never through its target."""

    def __init__(self, obs_dim: int, n_actions: int, feature_dim: int = 32, hidden: Sequence[int] = (64,),
                 beta: float = 0.2, eta: float = 1.0):
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ICMModule: beta must lie in [0, 1], got {beta}")
        self.obs_dim, self.n_actions, self.beta, self.eta = obs_dim, n_actions, beta, eta
        self.encoder = mlp(obs_dim, hidden, feature_dim, activation="relu")
        self.inverse_model = mlp(2 * feature_dim, hidden, n_actions, activation="relu")
        self.forward_model = mlp(feature_dim + n_actions, hidden, feature_dim, activation="relu")
        self.built = True

    def forward(self, obs, next_obs, actions) -> tuple[Tensor, Tensor, Tensor]:
        """(inverse-model logits (batch, n_actions), phi_hat (batch, d), phi(s_{t+1}) (batch, d))."""
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        next_obs = next_obs if isinstance(next_obs, Tensor) else obs_tensor(next_obs)
        _check_obs("ICMModule", obs, self.obs_dim)
        _check_obs("ICMModule", next_obs, self.obs_dim)
        actions = numpy.asarray(actions.numpy() if isinstance(actions, Tensor) else actions).astype(numpy.int64)
        if actions.shape != (obs.shape[0],) or (actions < 0).any() or (actions >= self.n_actions).any():
            raise ShapeError(f"ICMModule: expected {obs.shape[0]} actions in [0, {self.n_actions}), got shape "
                             f"{actions.shape} with values {numpy.unique(actions)[:8].tolist()}")
        phi, phi_next = self.encoder(obs), self.encoder(next_obs)
        logits = self.inverse_model(concat([phi, phi_next], axis=-1))
        one_hot = tensor(numpy.eye(self.n_actions, dtype=get_default_dtype())[actions])
        phi_hat = self.forward_model(concat([phi, one_hot], axis=-1))
        return logits, phi_hat, phi_next

    def reward(self, obs, next_obs, actions) -> numpy.ndarray:
        """r_int = eta / 2 ||phi_hat - phi(s_{t+1})||^2 per row (a NumPy array)."""
        _, phi_hat, phi_next = self(obs, next_obs, actions)
        return self.eta * 0.5 * ((phi_hat - phi_next) ** 2).sum(axis=-1).numpy()


def icm_losses(logits: Tensor, phi_hat: Tensor, phi_next: Tensor, actions, beta: float = 0.2,
               weights=None) -> tuple[Tensor, dict[str, float]]:
    """(1 - beta) L_I + beta L_F over a batch (:class:`ICMModule`), each a mean over rows (a
    weighted one with 0/1 ``weights``: the rows a module is trained on); returns the loss and
    its parts (``inverse_loss``, ``forward_loss``)."""
    actions = numpy.asarray(actions).astype(numpy.int64)
    one_hot = tensor(numpy.eye(logits.shape[-1], dtype=logits.dtype)[actions])
    inverse_rows = -(one_hot * log_softmax(logits, axis=-1)).sum(axis=-1)
    forward_rows = 0.5 * ((phi_hat - phi_next.detach()) ** 2).sum(axis=-1)
    inverse_loss, forward_loss = _masked_mean(inverse_rows, weights), _masked_mean(forward_rows, weights)
    total = (1.0 - beta) * inverse_loss + beta * forward_loss
    return total, {"inverse_loss": inverse_loss.item(), "forward_loss": forward_loss.item()}


def _masked_mean(rows: Tensor, weights) -> Tensor:
    if weights is None:
        return mean(rows)
    weights = numpy.asarray(weights, dtype=numpy.float64)
    return (rows * tensor(weights.astype(rows.dtype))).sum() / max(float(weights.sum()), 1.0)
