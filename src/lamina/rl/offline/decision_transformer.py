"""Decision Transformer (Chen et al., 2021): offline RL as sequence modelling. A trajectory is
read as the tokens

    R_1, s_1, a_1, R_2, s_2, a_2, ..., R_T, s_T, a_T      (R_t the return to go from step t)

each embedded by its own linear layer (an embedding table for discrete actions) plus a learned
embedding of the episode step t, then LayerNorm, then GPT-2's causal pre-norm blocks
(:class:`lamina.models.GPT2Block`, with no position embedding: the step embeddings place the
tokens). The action a_t is predicted from the output at s_t's token, which sees R_1..R_t,
s_1..s_t and a_1..a_{t-1} and nothing later. Training minimizes the cross-entropy (discrete)
or squared error (continuous, actions in [-1, 1]^d) of the predicted actions over windows of
``context_length`` steps; acting starts from a target return and decreases it by each reward."""

from __future__ import annotations

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import cross_entropy, reshape, stack, tanh
from lamina.functional import sum as sum_of
from lamina.models.gpt2 import GPT2Block
from lamina.nn import Dense, Embedding, LayerNorm, Module, ModuleList
from lamina.parallel import one_blas_thread
from lamina.rl.env import Env
from lamina.rl.offline.common import check_number, check_positive_int
from lamina.rl.offline.dataset import OfflineDataset, check_action_space
from lamina.rl.spaces import Box, Discrete, Space, seeded_generator


class DecisionTransformer(Module):
    """The Decision Transformer of the module docstring.

    ``model(returns_to_go, observations, actions, timesteps)`` with returns to go (B, T) (already
    divided by ``return_scale``), observations (B, T, obs_dim), actions (B, T) int (discrete) or
    (B, T, d) in [-1, 1] (continuous) and episode steps (B, T) in [0, max_episode_steps) gives the
    action predictions (B, T, n_actions) logits or (B, T, d) in (-1, 1); T <= ``context_length``."""

    def __init__(self, obs_dim: int, action_space: Space, context_length: int = 20, max_episode_steps: int = 1000,
                 d_model: int = 64, n_layer: int = 2, n_head: int = 1, dropout: float = 0.1,
                 return_scale: float = 1.0):
        super().__init__()
        who = "DecisionTransformer"
        if not isinstance(action_space, (Discrete, Box)) or (isinstance(action_space, Box)
                                                            and len(action_space.shape) != 1):
            raise ValueError(f"{who}: needs a Discrete or flat Box action space, got {action_space!r}")
        self.obs_dim = check_positive_int(who, "obs_dim", obs_dim)
        self.context_length = check_positive_int(who, "context_length", context_length)
        self.max_episode_steps = check_positive_int(who, "max_episode_steps", max_episode_steps)
        self.d_model = check_positive_int(who, "d_model", d_model)
        self.return_scale = check_number(who, "return_scale", return_scale, 0.0, open_low=True)
        if d_model % check_positive_int(who, "n_head", n_head):
            raise ValueError(f"{who}: d_model {d_model} is not divisible by n_head {n_head}")
        self.action_space = action_space
        self.discrete = isinstance(action_space, Discrete)
        self.n_outputs = action_space.n if self.discrete else action_space.shape[0]
        self.embed_timestep = Embedding(max_episode_steps, d_model)
        self.embed_return = Dense(d_model)
        self.embed_state = Dense(d_model)
        self.embed_action = Embedding(self.n_outputs, d_model) if self.discrete else Dense(d_model)
        self.embed_ln = LayerNorm(-1)
        self.blocks = ModuleList([GPT2Block(d_model, n_head, 4 * d_model, dropout, dropout) for _ in range(n_layer)])
        self.ln_f = LayerNorm(-1)
        self.predict_action = Dense(self.n_outputs)
        hidden = (None, None, d_model)
        for layer, shape in ((self.embed_timestep, (None, None)), (self.embed_return, (None, None, 1)),
                             (self.embed_state, (None, None, obs_dim)),
                             (self.embed_action, (None, None) if self.discrete else (None, None, self.n_outputs)),
                             (self.embed_ln, hidden), *((block, hidden) for block in self.blocks),
                             (self.ln_f, hidden), (self.predict_action, hidden)):
            layer.build(shape)
            layer.built = True
        self.built = True

    def _check_inputs(self, returns_to_go, observations, actions, timesteps) -> None:
        batch, steps = numpy.shape(timesteps)[:2] if numpy.ndim(timesteps) == 2 else (None, None)
        expected = {"returns_to_go": (batch, steps), "observations": (batch, steps, self.obs_dim),
                    "actions": (batch, steps) if self.discrete else (batch, steps, self.n_outputs),
                    "timesteps": (batch, steps)}
        given = {"returns_to_go": returns_to_go, "observations": observations, "actions": actions,
                 "timesteps": timesteps}
        for name, value in given.items():
            if tuple(value.shape) != expected[name] or steps is None:
                shapes = {k: tuple(v.shape) for k, v in given.items()}
                raise ValueError(f"DecisionTransformer: expected shapes {expected} (B, T from timesteps), got {shapes}")
        if steps > self.context_length:
            raise ValueError(f"DecisionTransformer: {steps} steps exceed the context length {self.context_length}")

    def token_embeddings(self, returns_to_go, observations, actions, timesteps) -> Tensor:
        """The token sequence (B, 3T, d_model) before LayerNorm: rows 3t, 3t + 1, 3t + 2 embed R_t,
        s_t and a_t, each plus the embedding of step t."""
        timesteps = numpy.asarray(timesteps, dtype=numpy.int64)
        rtg, obs = numpy.asarray(returns_to_go), numpy.asarray(observations)
        self._check_inputs(rtg, obs, numpy.asarray(actions), timesteps)
        if timesteps.min() < 0 or timesteps.max() >= self.max_episode_steps:
            raise ValueError(f"DecisionTransformer: timesteps must lie in [0, {self.max_episode_steps}), got "
                             f"[{timesteps.min()}, {timesteps.max()}]")
        dtype = self.embed_state.weight.dtype
        time = self.embed_timestep(timesteps)
        returns = self.embed_return(tensor(rtg[..., None], dtype=dtype)) + time
        states = self.embed_state(tensor(obs, dtype=dtype)) + time
        if self.discrete:
            acts = self.embed_action(numpy.asarray(actions, dtype=numpy.int64))
        else:
            acts = self.embed_action(tensor(numpy.asarray(actions), dtype=dtype))
        batch, steps = timesteps.shape
        return reshape(stack([returns, states, acts + time], axis=2), batch, 3 * steps, self.d_model)

    def forward(self, returns_to_go, observations, actions, timesteps) -> Tensor:
        h = self.embed_ln(self.token_embeddings(returns_to_go, observations, actions, timesteps))
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        batch, steps = numpy.shape(timesteps)
        state_outputs = reshape(h, batch, steps, 3, self.d_model)[:, :, 1]
        out = self.predict_action(state_outputs)
        return out if self.discrete else tanh(out)

    def to_model_actions(self, actions) -> numpy.ndarray:
        """Environment actions as the model reads them: ids, or moved from the bounds to [-1, 1]^d."""
        if self.discrete:
            return numpy.asarray(actions, dtype=numpy.int64) - self.action_space.start
        low, high = self.action_space.low.astype(numpy.float64), self.action_space.high.astype(numpy.float64)
        unit = 2.0 * (numpy.asarray(actions, dtype=numpy.float64) - low) / (high - low) - 1.0
        return numpy.clip(unit, -1.0, 1.0).astype(numpy.float32)

    def to_env_action(self, prediction: numpy.ndarray):
        if self.discrete:
            return int(prediction.argmax()) + self.action_space.start
        low, high = self.action_space.low.astype(numpy.float64), self.action_space.high.astype(numpy.float64)
        return (low + (prediction.astype(numpy.float64) + 1.0) * 0.5 * (high - low)).astype(self.action_space.dtype)


def decision_transformer_loss(model: DecisionTransformer, segment: dict[str, numpy.ndarray]) -> Tensor:
    """The mean action-prediction loss over the real (unpadded) steps of a batch of
    :meth:`OfflineDataset.segments` (actions already as :meth:`DecisionTransformer.to_model_actions`
    gives them): cross-entropy, or squared error summed over the action's components."""
    mask = segment["mask"]
    predictions = model(segment["returns_to_go"], segment["observations"], segment["actions"], segment["timesteps"])
    if model.discrete:
        return cross_entropy(predictions, numpy.where(mask, segment["actions"], -100))
    weight = tensor((mask / mask.sum())[..., None], dtype=predictions.dtype)
    return sum_of(weight * (predictions - tensor(segment["actions"], dtype=predictions.dtype)) ** 2)


def train_decision_transformer(model: DecisionTransformer, dataset: OfflineDataset, steps: int,
                               batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                               max_grad_norm: float = 0.25, seed: int | None = None) -> list[float]:
    """``steps`` AdamW steps (gradient norm clipped to ``max_grad_norm``, as the original code) on
    windows of ``model.context_length`` steps drawn by :meth:`OfflineDataset.segments`, returns to
    go divided by ``model.return_scale``; returns the loss of every step."""
    check_action_space(dataset, model.action_space, "train_decision_transformer")
    if dataset.observation_dim != model.obs_dim:
        raise ValueError(f"train_decision_transformer: the model takes observations of {model.obs_dim} values, "
                         f"the dataset's have {dataset.observation_dim}")
    if dataset.timesteps().max() >= model.max_episode_steps:
        raise ValueError(f"train_decision_transformer: the dataset has episodes longer than the model's "
                         f"max_episode_steps {model.max_episode_steps}")
    check_positive_int("train_decision_transformer", "steps", steps)
    rng = seeded_generator(seed)
    optimizer = optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    with one_blas_thread():
        for _ in range(steps):
            segment = dataset.segments(batch_size, model.context_length, rng, return_scale=model.return_scale)
            actions = model.to_model_actions(segment["actions"])
            segment["actions"] = numpy.where(segment["mask"], actions, 0) if model.discrete else actions
            loss = decision_transformer_loss(model, segment)
            optimizer.zero_grad()
            loss.backward()
            optim.clip_grad_norm(model, max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses


def evaluate_decision_transformer(model: DecisionTransformer, env: Env, target_return: float,
                                  n_episodes: int = 5, seed: int | None = None) -> numpy.ndarray:
    """The returns of ``n_episodes`` episodes (episode i reset with ``seed + i``) acting on the
    model's action prediction for the latest state, conditioned on the return to go, which
    starts at ``target_return`` and falls by each reward received; the model reads the last
    ``context_length`` steps (the current step's action, not yet known, as a zero placeholder,
    which no prediction sees)."""
    check_action_space_for_env(model, env)
    returns = numpy.zeros(n_episodes)
    action_shape = () if model.discrete else (model.n_outputs,)
    model.eval()
    with no_grad(), one_blas_thread():
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=None if seed is None else seed + episode)
            history_obs, history_actions, history_rtg = [obs], [numpy.zeros(action_shape)], [target_return]
            done = False
            while not done:
                window = slice(max(0, len(history_obs) - model.context_length), None)
                steps = numpy.minimum(numpy.arange(len(history_obs))[window], model.max_episode_steps - 1)
                predictions = model(numpy.asarray(history_rtg[window])[None] / model.return_scale,
                                    numpy.asarray(history_obs[window])[None],
                                    numpy.asarray(history_actions[window])[None], steps[None]).numpy()
                action = model.to_env_action(predictions[0, -1])
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[episode] += reward
                history_actions[-1] = model.to_model_actions(action)
                history_obs.append(obs)
                history_actions.append(numpy.zeros(action_shape))
                history_rtg.append(history_rtg[-1] - reward)
                done = terminated or truncated
    return returns


def check_action_space_for_env(model: DecisionTransformer, env: Env) -> None:
    space = env.action_space
    same = (isinstance(space, Discrete) and model.discrete and space.n == model.n_outputs) or (
        isinstance(space, Box) and not model.discrete and space.shape == (model.n_outputs,))
    if not same:
        raise ValueError(f"DecisionTransformer: the model was built for {model.action_space} but the environment "
                         f"acts in {space}")
