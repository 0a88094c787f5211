"""Neural collaborative filtering (He et al. 2017): GMF, the MLP model and their fusion NeuMF,
scoring implicit feedback (user, item) -> a logit of "the user interacted with the item".

    GMF:    phi = p_u * q_i                               (element-wise product)
    MLP:    phi = a_L(... a_1(W_1 [p'_u ; q'_i] + b_1) ...)   (ReLU layers)
    NeuMF:  y_hat = sigma(h^T [phi_GMF ; phi_MLP] + b)     (separate embeddings per branch)

GMF and MLP each end with their own h. The models return the logit h^T phi + b (train with
binary cross-entropy ``from_logits=True`` on each positive and sampled negatives).
:meth:`NeuMF.pretrained` starts NeuMF from a trained GMF and MLP as in the paper: their
embeddings and MLP layers, and the head h = [alpha h_GMF ; (1 - alpha) h_MLP].
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import Dense, Embedding, Sequential
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

from .id_inputs import checked_pairs

__all__ = ["GMF", "NCF", "NCFMLP", "NeuMF"]

EMBEDDING_INIT = {"name": "normal", "std": 0.01}        # the paper's N(0, 0.01^2)


def _built(layer: Module, input_dim: int) -> Module:
    layer.build((None, input_dim))
    return layer


def _tower(input_dim: int, layers, who: str) -> Sequential:
    """ReLU layers of the given widths on an ``input_dim`` input, built."""
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{who}: layers must name at least one hidden width, got {layers!r}")
    dense, width = [], input_dim
    for units in layers:
        positive_int(units, f"{who}: layer width")
        dense.append(_built(Dense(units, activation="relu"), width))
        width = units
    tower = Sequential(*dense)
    tower.built = True
    return tower


def _head(input_dim: int) -> Dense:
    return _built(Dense(1, kernel_init="xavier_uniform"), input_dim)


def _check_sizes(who: str, **sizes) -> None:
    for what, value in sizes.items():
        positive_int(value, f"{who}: {what}")


def _logit(head: Dense, features: Tensor) -> Tensor:
    return F.reshape(head(features), (-1,))


@register_layer
class GMF(Module):
    """Generalized matrix factorization: (users (B,), items (B,)) -> logits h^T (p_u * q_i) + b."""

    reads_ids = True

    def __init__(self, n_users: int, n_items: int, dim: int = 8, name: str | None = None):
        super().__init__(name=name)
        _check_sizes("GMF", n_users=n_users, n_items=n_items, dim=dim)
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_embedding = _built(Embedding(n_users, dim, embeddings_init=EMBEDDING_INIT), n_users)
        self.item_embedding = _built(Embedding(n_items, dim, embeddings_init=EMBEDDING_INIT), n_items)
        self.head = _head(dim)
        self.built = True

    def features(self, users, items) -> Tensor:
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        return self.user_embedding(users) * self.item_embedding(items)

    def forward(self, users, items) -> Tensor:
        return _logit(self.head, self.features(users, items))

    def get_config(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "name": self.name}


@register_layer
class NCFMLP(Module):
    """NCF's MLP model: (users, items) -> logits h^T MLP([p_u ; q_i]) + b, ReLU layers of widths
    ``layers`` on the concatenated ``dim``-sized embeddings."""

    reads_ids = True

    def __init__(self, n_users: int, n_items: int, dim: int = 16, layers=(32, 16, 8), name: str | None = None):
        super().__init__(name=name)
        _check_sizes("NCFMLP", n_users=n_users, n_items=n_items, dim=dim)
        self.n_users, self.n_items, self.dim, self.layers = n_users, n_items, dim, tuple(layers)
        self.user_embedding = _built(Embedding(n_users, dim, embeddings_init=EMBEDDING_INIT), n_users)
        self.item_embedding = _built(Embedding(n_items, dim, embeddings_init=EMBEDDING_INIT), n_items)
        self.tower = _tower(2 * dim, self.layers, "NCFMLP")
        self.head = _head(self.layers[-1])
        self.built = True

    def features(self, users, items) -> Tensor:
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        return self.tower(F.concat([self.user_embedding(users), self.item_embedding(items)], axis=-1))

    def forward(self, users, items) -> Tensor:
        return _logit(self.head, self.features(users, items))

    def get_config(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "layers": list(self.layers),
                "name": self.name}


@register_layer
class NeuMF(Module):
    """NeuMF: a GMF branch (``gmf_dim``) and an MLP branch (``mlp_dim``, ReLU ``layers``) with
    their own embeddings, fused by one head: (users, items) -> h^T [phi_GMF ; phi_MLP] + b."""

    reads_ids = True

    def __init__(self, n_users: int, n_items: int, gmf_dim: int = 8, mlp_dim: int = 16, layers=(32, 16, 8),
                 name: str | None = None):
        super().__init__(name=name)
        _check_sizes("NeuMF", n_users=n_users, n_items=n_items, gmf_dim=gmf_dim, mlp_dim=mlp_dim)
        self.n_users, self.n_items = n_users, n_items
        self.gmf_dim, self.mlp_dim, self.layers = gmf_dim, mlp_dim, tuple(layers)
        self.gmf = GMF(n_users, n_items, gmf_dim)
        self.mlp = NCFMLP(n_users, n_items, mlp_dim, self.layers)
        self.head = _head(gmf_dim + self.layers[-1])
        # the branches' own heads are not part of NeuMF
        del self.gmf.head, self.mlp.head
        self.built = True

    def forward(self, users, items) -> Tensor:
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        fused = F.concat([self.gmf.features(users, items), self.mlp.features(users, items)], axis=-1)
        return _logit(self.head, fused)

    @classmethod
    def pretrained(cls, gmf: GMF, mlp: NCFMLP, alpha: float = 0.5) -> NeuMF:
        """A NeuMF starting from trained ``gmf`` and ``mlp`` (of the same users and items): their
        embeddings and MLP layers copied, the head [alpha h_GMF ; (1 - alpha) h_MLP] with bias
        alpha b_GMF + (1 - alpha) b_MLP (He et al. 2017, section 3.4.1)."""
        if not isinstance(gmf, GMF) or not isinstance(mlp, NCFMLP):
            raise TypeError(f"NeuMF.pretrained: expected a GMF and an NCFMLP, got {type(gmf).__name__} and "
                            f"{type(mlp).__name__}")
        if (gmf.n_users, gmf.n_items) != (mlp.n_users, mlp.n_items):
            raise ValueError(f"NeuMF.pretrained: the GMF has {gmf.n_users} users and {gmf.n_items} items but the "
                             f"MLP {mlp.n_users} and {mlp.n_items}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"NeuMF.pretrained: alpha must be in [0, 1], got {alpha!r}")
        model = cls(gmf.n_users, gmf.n_items, gmf.dim, mlp.dim, mlp.layers)
        for branch, source in ((model.gmf, gmf), (model.mlp, mlp)):
            for name, param in branch.named_parameters():
                param.data[...] = dict(source.named_parameters())[name].data
        head = (model.head.weight.data, model.head.bias.data)
        head[0][...] = np.concatenate([alpha * gmf.head.weight.data, (1 - alpha) * mlp.head.weight.data])
        head[1][...] = alpha * gmf.head.bias.data + (1 - alpha) * mlp.head.bias.data
        return model

    def get_config(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "gmf_dim": self.gmf_dim, "mlp_dim": self.mlp_dim,
                "layers": list(self.layers), "name": self.name}


NCF = NeuMF
