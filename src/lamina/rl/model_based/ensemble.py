"""A probabilistic ensemble of dynamics models (Chua et al., 2018, "Deep Reinforcement Learning
in a Handful of Trials using Probabilistic Dynamics Models", PETS) and trajectory-sampling
propagation of particles through it.

Each of the E members is an MLP on the normalised input [s, a] that outputs a diagonal Gaussian
over the normalised target [s' - s, r]: a mean and a log-variance soft-clamped between learned
bounds (as in the PETS code and mbrl-lib)::

    logvar = max_logvar - softplus(max_logvar - raw)
    logvar = min_logvar + softplus(logvar - min_logvar)

trained on the Gaussian negative log-likelihood, summed over the members, plus a small penalty
that keeps the bounds tight::

    loss = sum_e mean_{b, j} 1/2 (logvar + (mean - y)^2 exp(-logvar)) + c (sum max_logvar - sum min_logvar)

Member e sees its own bootstrap batch: the inputs are stacked (E, batch, features) and every
layer is a batched matrix product with weights (E, n_in, n_out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import get_default_dtype
from lamina.errors import ShapeError
from lamina.functional import matmul, silu, softplus
from lamina.functional import mean as mean_of
from lamina.functional import sum as sum_of
from lamina.nn import Module, Parameter
from lamina.parallel import one_blas_thread
from lamina.rl.spaces import seeded_generator


def soft_clamp_logvar(raw: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """The PETS soft clamp of a raw log-variance into (min_logvar, max_logvar) (module docstring)."""
    logvar = max_logvar - softplus(max_logvar - raw)
    return min_logvar + softplus(logvar - min_logvar)


def gaussian_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """sum over the leading (member) axis of mean_{b, j} 1/2 (logvar + (mean - y)^2 exp(-logvar)),
    for arrays of shape (E, batch, dims) (the constant 1/2 log 2 pi left out)."""
    diff = mean - target
    per_member = mean_of(0.5 * (logvar + diff * diff * (-logvar).exp()), axis=(1, 2))
    return sum_of(per_member)


def _check_positive_int(label: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{label}: {name} must be a positive int, got {value!r}")
    return int(value)


class ProbabilisticEnsemble(Module):
    """E Gaussian MLPs s, a -> (s' - s, r) with SiLU (swish) hidden layers, learned log-variance
    bounds, input and output normalisation (fitted to the data by :meth:`fit`) and a set of elites
    (the members with the lowest held-out error).

    ``forward(inputs)`` maps normalised inputs (E, batch, obs_dim + act_dim) to the normalised
    (mean, logvar), each (E, batch, obs_dim + 1); :meth:`predict` works on raw arrays."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (200, 200, 200, 200),
                 ensemble_size: int = 5, num_elites: int | None = None, logvar_penalty: float = 0.01,
                 seed: int | None = None):
        super().__init__()
        label = "ProbabilisticEnsemble"
        self.obs_dim = _check_positive_int(label, "obs_dim", obs_dim)
        self.act_dim = _check_positive_int(label, "act_dim", act_dim)
        self.ensemble_size = _check_positive_int(label, "ensemble_size", ensemble_size)
        num_elites = self.ensemble_size if num_elites is None else num_elites
        if _check_positive_int(label, "num_elites", num_elites) > self.ensemble_size:
            raise ValueError(f"{label}: num_elites ({num_elites}) exceeds ensemble_size ({self.ensemble_size})")
        self.num_elites = int(num_elites)
        self.logvar_penalty = float(logvar_penalty)
        self.rng = seeded_generator(seed)
        dtype = get_default_dtype()
        n_in, self.out_dim = self.obs_dim + self.act_dim, self.obs_dim + 1
        sizes = [n_in, *[_check_positive_int(label, "hidden size", h) for h in hidden], 2 * self.out_dim]
        self.n_layers = len(sizes) - 1
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # the PETS code's start: a normal of std 1 / (2 sqrt(fan_in)) truncated at two standard deviations
            std = 1.0 / (2.0 * numpy.sqrt(fan_in))
            w = numpy.clip(self.rng.normal(0.0, std, (self.ensemble_size, fan_in, fan_out)), -2 * std, 2 * std)
            setattr(self, f"weight{i}", Parameter(w.astype(dtype)))
            setattr(self, f"bias{i}", Parameter(numpy.zeros((self.ensemble_size, 1, fan_out), dtype=dtype)))
        self.max_logvar = Parameter(numpy.full((1, 1, self.out_dim), 0.5, dtype=dtype))
        self.min_logvar = Parameter(numpy.full((1, 1, self.out_dim), -10.0, dtype=dtype))
        # the normalisers and the elites are saved with the weights in the state dict
        self.register_buffer("input_mean", numpy.zeros(n_in))
        self.register_buffer("input_std", numpy.ones(n_in))
        self.register_buffer("target_mean", numpy.zeros(self.out_dim))
        self.register_buffer("target_std", numpy.ones(self.out_dim))
        self.register_buffer("elites", numpy.arange(self.num_elites))
        self.built = True

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised inputs (E, batch, obs_dim + act_dim) -> normalised (mean, logvar)."""
        if inputs.ndim != 3 or inputs.shape[0] != self.ensemble_size or inputs.shape[2] != self.obs_dim + self.act_dim:
            raise ShapeError(f"ProbabilisticEnsemble: expected inputs of shape ({self.ensemble_size}, batch, "
                             f"{self.obs_dim + self.act_dim}), got {inputs.shape}")
        x = inputs
        for i in range(self.n_layers):
            x = matmul(x, getattr(self, f"weight{i}")) + getattr(self, f"bias{i}")
            if i < self.n_layers - 1:
                x = silu(x)
        mean, raw = x[..., :self.out_dim], x[..., self.out_dim:]
        return mean, soft_clamp_logvar(raw, self.max_logvar, self.min_logvar)

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The ensemble's training loss (module docstring) on normalised inputs and targets, both
        stacked (E, batch, features)."""
        mean, logvar = self(inputs)
        return gaussian_nll(mean, logvar, targets) + self.logvar_penalty * (
            sum_of(self.max_logvar) - sum_of(self.min_logvar))

    # -- data ----------------------------------------------------------------
    def _inputs_targets(self, obs, actions, next_obs=None, rewards=None):
        label = "ProbabilisticEnsemble"
        obs = numpy.asarray(obs, dtype=numpy.float64)
        actions = numpy.asarray(actions, dtype=numpy.float64)
        if actions.ndim == 1 and self.act_dim == 1 and obs.ndim == 2:
            actions = actions[:, None]
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim or actions.shape != (len(obs), self.act_dim):
            raise ShapeError(f"{label}: expected obs (n, {self.obs_dim}) and actions (n, {self.act_dim}), got "
                             f"{obs.shape} and {actions.shape}")
        inputs = numpy.concatenate([obs, actions], axis=1)
        if next_obs is None:
            return inputs, None
        next_obs = numpy.asarray(next_obs, dtype=numpy.float64)
        rewards = numpy.asarray(rewards, dtype=numpy.float64).reshape(-1)
        if next_obs.shape != obs.shape or rewards.shape != (len(obs),):
            raise ShapeError(f"{label}: expected next_obs {obs.shape} and rewards ({len(obs)},), got "
                             f"{next_obs.shape} and {rewards.shape}")
        return inputs, numpy.concatenate([next_obs - obs, rewards[:, None]], axis=1)

    def fit(self, obs, actions, next_obs, rewards, epochs: int = 50, batch_size: int = 32, lr: float = 1e-3,
            weight_decay: float = 0.0, validation_fraction: float = 0.2) -> dict[str, list[float]]:
        """Fit the normalisers to the data, then train every member on its own bootstrap resample
        of the training part for ``epochs`` passes with Adam; the members with the lowest
        held-out mean squared error (normalised) become the elites. Returns the training losses
        per epoch and the held-out error of every member."""
        inputs, targets = self._inputs_targets(obs, actions, next_obs, rewards)
        n = len(inputs)
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"ProbabilisticEnsemble.fit: validation_fraction must be in [0, 1), got "
                             f"{validation_fraction!r}")
        n_val = int(n * validation_fraction)
        if n - n_val < 2:
            raise ValueError(f"ProbabilisticEnsemble.fit: needs at least 2 training transitions, got {n - n_val}")
        order = self.rng.permutation(n)
        train, val = order[n_val:], order[:n_val]
        self.input_mean, self.input_std = inputs[train].mean(0), inputs[train].std(0) + 1e-6
        self.target_mean, self.target_std = targets[train].mean(0), targets[train].std(0) + 1e-6
        x = (inputs - self.input_mean) / self.input_std
        y = (targets - self.target_mean) / self.target_std
        bootstrap = self.rng.integers(0, len(train), (self.ensemble_size, len(train)))
        optimizer = optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        dtype = get_default_dtype()
        history: dict[str, list[float]] = {"loss": []}
        with one_blas_thread():
            self._train(x, y, train, bootstrap, epochs, batch_size, optimizer, history)
        if n_val:
            with no_grad():
                mean, _ = self(tensor(numpy.broadcast_to(x[val], (self.ensemble_size, *x[val].shape))
                                      .astype(dtype)))
            errors = ((mean.numpy() - y[val]) ** 2).mean(axis=(1, 2))
            self.elites = numpy.argsort(errors)[:self.num_elites]
            history["validation_mse"] = errors.tolist()
        return history

    def _train(self, x, y, train, bootstrap, epochs, batch_size, optimizer, history) -> None:
        dtype = get_default_dtype()
        for _ in range(epochs):
            per_member = train[bootstrap[:, self.rng.permutation(len(train))]]
            total = 0.0
            for start in range(0, len(train), batch_size):
                index = per_member[:, start:start + batch_size]
                loss = self.loss(tensor(x[index].astype(dtype)), tensor(y[index].astype(dtype)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * index.shape[1]
            history["loss"].append(total / len(train))

    # -- prediction ----------------------------------------------------------
    def predict(self, obs, actions, members=None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The predicted Gaussian over [s' - s, r] in raw units: (mean, variance), each of shape
        (E, n, obs_dim + 1); with ``members`` (an int array of length n), row i comes from member
        members[i] only and both have shape (n, obs_dim + 1). Runs on plain arrays (no graph)."""
        inputs, _ = self._inputs_targets(obs, actions)
        x = (inputs - self.input_mean) / self.input_std
        for i in range(self.n_layers):
            weight = getattr(self, f"weight{i}").numpy().astype(numpy.float64)
            bias = getattr(self, f"bias{i}").numpy().astype(numpy.float64)
            x = numpy.matmul(x, weight) + bias  # (n, in) @ (E, in, out) broadcasts to (E, n, out)
            if i < self.n_layers - 1:
                x = x / (1.0 + numpy.exp(-x))
        if members is not None:  # every member runs on every row (batched products are cheaper than gathers)
            x = x[members, numpy.arange(len(members))]
        mean, raw = x[..., :self.out_dim], x[..., self.out_dim:]
        max_lv, min_lv = (p.numpy().astype(numpy.float64).reshape(-1) for p in (self.max_logvar, self.min_logvar))
        logvar = max_lv - numpy.logaddexp(0.0, max_lv - raw)
        logvar = min_lv + numpy.logaddexp(0.0, logvar - min_lv)
        return mean * self.target_std + self.target_mean, numpy.exp(logvar) * self.target_std**2

    def sample(self, obs, actions, members, rng: numpy.random.Generator | None = None,
               deterministic: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Draw (next_obs, rewards) for each row from member ``members[i]``'s Gaussian (its mean
        when ``deterministic``)."""
        obs = numpy.asarray(obs, dtype=numpy.float64)
        mean, var = self.predict(obs, actions, numpy.asarray(members))
        if not deterministic:
            rng = self.rng if rng is None else rng
            mean = mean + numpy.sqrt(var) * rng.standard_normal(mean.shape)
        return obs + mean[:, :self.obs_dim], mean[:, self.obs_dim]


class TrajectorySampling:
    """The ensemble as a stochastic dynamics callable ``(states, actions) -> (next_states,
    rewards)`` for the planners (PETS's trajectory sampling): every row is a particle whose next
    state is drawn from one elite member's Gaussian.

    ``"ts1"`` draws the member afresh for every particle at every step; ``"tsinf"`` keeps the
    member of a particle for the whole trajectory (row r always uses elite r mod num_elites, and
    the planners repeat each candidate for consecutive particles). ``reward_fn(states, actions,
    next_states)``, when given, replaces the predicted reward (mbrl-lib's known reward)."""

    def __init__(self, ensemble: ProbabilisticEnsemble, mode: str = "ts1", reward_fn=None,
                 deterministic: bool = False, seed: int | None = None):
        if mode not in ("ts1", "tsinf"):
            raise ValueError(f"TrajectorySampling: mode must be 'ts1' or 'tsinf', got {mode!r}")
        self.ensemble, self.mode, self.reward_fn = ensemble, mode, reward_fn
        self.deterministic = deterministic
        self.rng = seeded_generator(seed)

    def members(self, n: int) -> numpy.ndarray:
        """The member of each of ``n`` particles for one step."""
        elites = numpy.asarray(self.ensemble.elites)
        if self.mode == "ts1":
            return elites[self.rng.integers(0, len(elites), n)]
        return elites[numpy.arange(n) % len(elites)]

    def __call__(self, states, actions) -> tuple[numpy.ndarray, numpy.ndarray]:
        states = numpy.asarray(states, dtype=numpy.float64)
        next_states, rewards = self.ensemble.sample(states, actions, self.members(len(states)), self.rng,
                                                    self.deterministic)
        if self.reward_fn is not None:
            rewards = numpy.asarray(self.reward_fn(states, numpy.asarray(actions), next_states), dtype=numpy.float64)
        return next_states, rewards
