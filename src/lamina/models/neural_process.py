"""Neural processes: models of distributions over functions that map a context set of (x, y)
pairs and target inputs x* to a Gaussian over the targets' y*, laid out as the DeepMind
reference notebooks ("neural-processes": CNP, NP, ANP).

Sets are (batch, points, features): context_x (B, n_c, d_x), context_y (B, n_c, d_y), target_x
(B, n_t, d_x), target_y (B, n_t, d_y). Every MLP is Dense layers with ReLU but for the last.

* :class:`ConditionalNeuralProcess` (Garnelo et al. 2018a): r = mean_i MLP([x_i, y_i]) over
  the context; the decoder maps [r, x*] to the mean and std = 0.1 + 0.9 softplus(raw) of each
  target. Trained by the negative log-likelihood of the targets.
* :class:`NeuralProcess` (Garnelo et al. 2018b): a latent z with q(z | s) = N(mu, sigma),
  sigma = 0.1 + 0.9 sigmoid(raw), from mean_i MLP([x_i, y_i]) over a set s, and a decoder
  of [z, x*] (and of a deterministic r as the CNP's with ``deterministic_path``). The loss is
  the negative ELBO per target point,

      -1/n_t [ sum_t log p(y_t | z, x_t) - KL(q(z | targets) || q(z | context)) ],  z ~ q(z | targets)

  with the targets holding the context points (as :class:`~lamina.models.GPCurves` gives
  them, and as in the reference, whose posterior reads the targets only).
* :class:`AttentiveNeuralProcess` (Kim et al. 2019): the NP with self-attention over the set in
  both encoders (Set Transformer SAB blocks: multihead, residual, layer norms) and, in place
  of the deterministic path's mean, multihead cross-attention from each target x* to the
  context x (keys and queries through a shared MLP of x, values the encoded context pairs),
  as the reference's 'multihead' attention with the 'mlp' representation.

``model(context_x, context_y, target_x)`` and :meth:`predict` give (mean, std) of each target;
:meth:`loss` the training loss. For the latent models the prediction uses the prior's mean of
z (``sample=True`` in :meth:`predict` draws z from q(z | context) instead).
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.distributions import Normal, kl_divergence
from lamina.errors import ShapeError
from lamina.nn import Dense, ModuleList, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.set_attention import SAB, multihead_attention

__all__ = ["AttentiveNeuralProcess", "ConditionalNeuralProcess", "MultiheadCrossAttention", "NeuralProcess"]


def _mlp(sizes, who: str) -> Sequential:
    sizes = tuple(sizes)
    if not sizes:
        raise ValueError(f"{who}: the layer sizes must not be empty")
    for size in sizes:
        positive_int(size, f"{who}: a layer size")
    return Sequential(*[Dense(s, activation="relu") for s in sizes[:-1]], Dense(sizes[-1]))


def _tile(rows: Tensor, count: int) -> Tensor:
    """(B, d) -> (B, count, d)."""
    return F.broadcast_to(rows[:, None, :], (rows.shape[0], count, rows.shape[1]))


@register_with_arguments
class MultiheadCrossAttention(Module):
    """Multihead attention without biases, as the neural-process reference's: queries (B, n_q,
    d_k) and keys (B, n_k, d_k) through a shared MLP of ``key_sizes`` (``key_mlp``), values
    (B, n_k, d_v):

        head_h = softmax(Q W_q^h (K W_k^h)^T / sqrt(d_v / H)) V W_v^h,   out = concat_h head_h W_o

    with ``num_heads`` heads H of d_v / H features each. Sub-layers ``query``, ``key``,
    ``value``, ``output`` (Dense, no bias)."""

    def __init__(self, dim: int, num_heads: int = 8, key_sizes=(128, 128), name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "MultiheadCrossAttention: dim")
        self.num_heads = positive_int(num_heads, "MultiheadCrossAttention: num_heads")
        if dim % num_heads:
            raise ValueError(f"MultiheadCrossAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.key_mlp = _mlp(key_sizes, "MultiheadCrossAttention")
        self.query = Dense(dim, use_bias=False)
        self.key = Dense(dim, use_bias=False)
        self.value = Dense(dim, use_bias=False)
        self.output = Dense(dim, use_bias=False)

    def forward(self, queries, keys, values) -> Tensor:
        q, k = self.query(self.key_mlp(queries)), self.key(self.key_mlp(keys))
        return self.output(multihead_attention(q, k, self.value(values), self.num_heads))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class _NeuralProcessBase(Module):
    """The checks of the sets, the Gaussian decoder and :meth:`predict` shared by the models."""

    def __init__(self, y_dim: int, decoder_sizes, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.y_dim = positive_int(y_dim, f"{who}: y_dim")
        self.x_dim = None
        self.decoder = _mlp(tuple(decoder_sizes) + (2 * self.y_dim,), who)

    def _as_tensor(self, values) -> Tensor:
        """An array as a tensor in the dtype of the model's weights (the default dtype before they exist)."""
        if isinstance(values, Tensor):
            return values
        weights = self.parameters()
        return Tensor(values, dtype=weights[0].dtype if weights else backend.get_default_dtype())

    def _sets(self, context_x, context_y, target_x, target_y=None) -> list[Tensor]:
        """The sets as tensors, checked against each other and the model's dimensions."""
        who = type(self).__name__
        named = {"context_x": context_x, "context_y": context_y, "target_x": target_x}
        if target_y is not None:
            named["target_y"] = target_y
        sets = {k: self._as_tensor(v) for k, v in named.items()}
        for key, value in sets.items():
            if value.ndim != 3:
                raise ShapeError(f"{who}: {key} of shape {tuple(value.shape)}; expected (batch, points, features)")
        shapes = {k: tuple(v.shape) for k, v in sets.items()}
        batch, num_context, x_dim = shapes["context_x"]
        num_targets = shapes["target_x"][1]
        expected = {"context_y": (batch, num_context, self.y_dim), "target_x": (batch, num_targets, x_dim),
                    "target_y": (batch, num_targets, self.y_dim)}
        for key, shape in shapes.items():
            if key in expected and shape != expected[key]:
                raise ShapeError(f"{who}: {key} of shape {shape} does not fit context_x {shapes['context_x']} and "
                                 f"target_x {shapes['target_x']} with y_dim {self.y_dim}; expected {expected[key]}")
        if num_context < 1:
            raise ShapeError(f"{who}: the context is empty (context_x of shape {shapes['context_x']})")
        if self.x_dim is not None and x_dim != self.x_dim:
            raise ShapeError(f"{who}: inputs x have {x_dim} features, the model was built for {self.x_dim}")
        self.x_dim = x_dim
        return list(sets.values())

    def _decode(self, representation: Tensor, target_x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of each target from [representation, x*]: std = 0.1 + 0.9 softplus(raw)."""
        out = self.decoder(F.concat([representation, target_x], axis=-1))
        return out[..., :self.y_dim], F.softplus(out[..., self.y_dim:]) * 0.9 + 0.1

    @staticmethod
    def _log_likelihood(mean: Tensor, std: Tensor, target_y: Tensor) -> Tensor:
        """log N(y | mean, std^2) summed over the y features: (B, n_t)."""
        return F.sum(Normal(mean, std).log_prob(target_y), axis=-1)

    def predict(self, context_x, context_y, target_x, **kwargs) -> tuple[Tensor, Tensor]:
        """(mean, std) of each target (B, n_t, d_y), without recording a graph."""
        with no_grad():
            return self(context_x, context_y, target_x, **kwargs)


@register_with_arguments
class ConditionalNeuralProcess(_NeuralProcessBase):
    """The CNP (module docstring): ``encoder`` MLP of ``encoder_sizes`` on [x, y], averaged over
    the context; ``decoder`` MLP of ``decoder_sizes`` + 2 d_y on [r, x*]. The defaults are the
    reference's (4 x 128, then 2 x 128). Called as ``cnp(context_x, context_y, target_x)`` ->
    (mean, std)."""

    def __init__(self, y_dim: int = 1, encoder_sizes=(128, 128, 128, 128), decoder_sizes=(128, 128),
                 name: str | None = None):
        super().__init__(y_dim, decoder_sizes, name)
        self.encoder = _mlp(encoder_sizes, "ConditionalNeuralProcess")

    def encode(self, context_x, context_y) -> Tensor:
        """r = mean_i MLP([x_i, y_i]): (B, r_dim), invariant to the order of the context."""
        return F.mean(self.encoder(F.concat([context_x, context_y], axis=-1)), axis=1)

    def forward(self, context_x, context_y, target_x) -> tuple[Tensor, Tensor]:
        context_x, context_y, target_x = self._sets(context_x, context_y, target_x)
        return self._decode(_tile(self.encode(context_x, context_y), target_x.shape[1]), target_x)

    def loss(self, context_x, context_y, target_x, target_y) -> Tensor:
        """-mean over tasks and targets of log p(y* | context, x*)."""
        context_x, context_y, target_x, target_y = self._sets(context_x, context_y, target_x, target_y)
        mean, std = self(context_x, context_y, target_x)
        return -F.mean(self._log_likelihood(mean, std, target_y))


@register_with_arguments
class NeuralProcess(_NeuralProcessBase):
    """The NP (module docstring): ``latent_encoder`` MLP of ``encoder_sizes`` on [x, y], averaged,
    then ``latent_hidden`` (Dense (r_dim + latent_dim) / 2, ReLU), ``latent_mean`` and
    ``latent_scale`` (Dense latent_dim) give q(z | s); with ``deterministic_path`` a CNP encoder
    ``deterministic_encoder`` adds r. ``decoder`` maps [r, z, x*]. Called as ``np(context_x,
    context_y, target_x, latent_noise=None)`` -> (mean, std), z = mu + sigma * latent_noise of
    the prior q(z | context) (its mean without noise)."""

    def __init__(self, y_dim: int = 1, encoder_sizes=(128, 128, 128, 128), latent_dim: int = 128,
                 decoder_sizes=(128, 128), deterministic_path: bool = False, name: str | None = None):
        super().__init__(y_dim, decoder_sizes, name)
        who = type(self).__name__
        self.latent_dim = positive_int(latent_dim, f"{who}: latent_dim")
        self.deterministic_path = bool(deterministic_path)
        self.latent_encoder = _mlp(encoder_sizes, who)
        self.latent_hidden = Dense((tuple(encoder_sizes)[-1] + self.latent_dim) // 2, activation="relu")
        self.latent_mean = Dense(self.latent_dim)
        self.latent_scale = Dense(self.latent_dim)
        if self.deterministic_path:
            self.deterministic_encoder = _mlp(encoder_sizes, who)

    def _latent_features(self, x: Tensor, y: Tensor) -> Tensor:
        return self.latent_encoder(F.concat([x, y], axis=-1))

    def latent_distribution(self, x, y) -> Normal:
        """q(z | s) = N(mu, sigma) for the set s of pairs (x, y): batch shape (B, latent_dim)."""
        hidden = self.latent_hidden(F.mean(self._latent_features(self._as_tensor(x), self._as_tensor(y)), axis=1))
        return Normal(self.latent_mean(hidden), F.sigmoid(self.latent_scale(hidden)) * 0.9 + 0.1)

    def _deterministic(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Tensor:
        encoded = self.deterministic_encoder(F.concat([context_x, context_y], axis=-1))
        return _tile(F.mean(encoded, axis=1), target_x.shape[1])

    def _predictive(self, context_x, context_y, target_x, z: Tensor) -> tuple[Tensor, Tensor]:
        parts = [_tile(z, target_x.shape[1])]
        if self.deterministic_path:
            parts.insert(0, self._deterministic(context_x, context_y, target_x))
        return self._decode(F.concat(parts, axis=-1) if len(parts) > 1 else parts[0], target_x)

    def _latent(self, q: Normal, latent_noise) -> Tensor:
        if latent_noise is None:
            return q.loc
        noise = self._as_tensor(latent_noise)
        if tuple(noise.shape) != tuple(q.loc.shape):
            raise ShapeError(f"{type(self).__name__}: latent_noise of shape {tuple(noise.shape)}; expected "
                             f"{tuple(q.loc.shape)} (batch, latent_dim)")
        return q.loc + q.scale * noise

    def forward(self, context_x, context_y, target_x, latent_noise=None) -> tuple[Tensor, Tensor]:
        context_x, context_y, target_x = self._sets(context_x, context_y, target_x)
        z = self._latent(self.latent_distribution(context_x, context_y), latent_noise)
        return self._predictive(context_x, context_y, target_x, z)

    def predict(self, context_x, context_y, target_x, sample: bool = False) -> tuple[Tensor, Tensor]:
        """(mean, std) of each target given z = the prior's mean, or a draw from q(z | context)
        with ``sample=True`` (lamina's generator)."""
        noise = None
        if sample:
            batch = numpy.shape(context_x)[0] if not isinstance(context_x, Tensor) else context_x.shape[0]
            noise = backend.rng().standard_normal((batch, self.latent_dim))
        return super().predict(context_x, context_y, target_x, latent_noise=noise)

    def loss(self, context_x, context_y, target_x, target_y, latent_noise=None, return_parts: bool = False):
        """The negative ELBO per target (module docstring), z = mu + sigma * ``latent_noise`` of the
        posterior q(z | targets) (noise from lamina's generator when not given). With
        ``return_parts``: (loss, log_likelihood (B,) summed over the targets, kl (B,))."""
        context_x, context_y, target_x, target_y = self._sets(context_x, context_y, target_x, target_y)
        prior = self.latent_distribution(context_x, context_y)
        posterior = self.latent_distribution(target_x, target_y)
        if latent_noise is None:
            latent_noise = backend.rng().standard_normal(tuple(prior.loc.shape)).astype(prior.loc.dtype)
        mean, std = self._predictive(context_x, context_y, target_x, self._latent(posterior, latent_noise))
        log_likelihood = F.sum(self._log_likelihood(mean, std, target_y), axis=1)
        kl = F.sum(kl_divergence(posterior, prior), axis=-1)
        loss = -F.mean(log_likelihood - kl) * (1.0 / target_x.shape[1])
        return (loss, log_likelihood, kl) if return_parts else loss


@register_with_arguments
class AttentiveNeuralProcess(NeuralProcess):
    """The ANP (module docstring): the NP with a deterministic path, ``self_attention_layers``
    SAB blocks (``num_heads`` heads, layer norms) after each encoder MLP
    (``latent_self_attention``, ``deterministic_self_attention``), and ``cross_attention``
    (:class:`MultiheadCrossAttention`, keys and queries through an MLP of ``attention_sizes``)
    from the targets to the context in the deterministic path. The width of the encoders
    (their last size) must be divisible by ``num_heads``."""

    def __init__(self, y_dim: int = 1, encoder_sizes=(128, 128, 128, 128), latent_dim: int = 128,
                 decoder_sizes=(128, 128), num_heads: int = 8, self_attention_layers: int = 2,
                 attention_sizes=(128, 128), name: str | None = None):
        super().__init__(y_dim, encoder_sizes, latent_dim, decoder_sizes, deterministic_path=True, name=name)
        width = tuple(encoder_sizes)[-1]
        if width % positive_int(num_heads, "AttentiveNeuralProcess: num_heads"):
            raise ValueError(f"AttentiveNeuralProcess: the encoders' width {width} (the last of encoder_sizes) is not "
                             f"divisible by num_heads {num_heads}")
        if isinstance(self_attention_layers, bool) or not isinstance(self_attention_layers, int) or \
                self_attention_layers < 0:
            raise ValueError(f"AttentiveNeuralProcess: self_attention_layers must be an int >= 0, got "
                             f"{self_attention_layers!r}")
        self.latent_self_attention = ModuleList([SAB(width, num_heads, ln=True)
                                                 for _ in range(self_attention_layers)])
        self.deterministic_self_attention = ModuleList([SAB(width, num_heads, ln=True)
                                                        for _ in range(self_attention_layers)])
        self.cross_attention = MultiheadCrossAttention(width, num_heads, attention_sizes)

    def _latent_features(self, x: Tensor, y: Tensor) -> Tensor:
        h = super()._latent_features(x, y)
        for block in self.latent_self_attention:
            h = block(h)
        return h

    def _deterministic(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Tensor:
        h = self.deterministic_encoder(F.concat([context_x, context_y], axis=-1))
        for block in self.deterministic_self_attention:
            h = block(h)
        return self.cross_attention(target_x, context_x, h)
