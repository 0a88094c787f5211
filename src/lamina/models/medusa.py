"""Medusa (Cai et al., "Medusa: Simple LLM inference acceleration framework with multiple
decoding heads", 2024): K extra heads on a language model's last hidden state guess the tokens
after the next one, and the model checks a tree of their guesses in one call.

Heads: head k (k = 0 .. K - 1) reads the final hidden state h_t of token t and scores token
t + k + 2 (the model's own head scores t + 1):

    x_0 = h_t,  x_{l+1} = x_l + SiLU(x_l W_{k,l} + b_{k,l})   (``num_layers`` residual blocks)
    logits_k = x_L U_k

with W, b zero at the start (each block the identity) and U_k a copy of the model's output
matrix (:meth:`MedusaHeads.load_lm_head`), so every head first repeats the model's guess.
Medusa-1 trains the heads alone, the model frozen, on
loss = sum_k lambda_k CE(logits_k[t], x_{t+k+2}) with lambda_k = decay^k (:func:`medusa_loss`).

Decoding (:func:`medusa_generate`, greedy): the model's argmax is the root of a tree whose
nodes at depth d are among the top tokens of head d - 1; a tree is a list of paths such as
(0, 1) (the top token of head 0, then the second of head 1) closed under prefixes
(:func:`medusa_tree`, or :func:`cartesian_tree` for every combination). All the nodes are read
in one call over the key/value cache with the tree's mask (each node sees the cached prefix,
its ancestors and itself; its position is prefix length + depth). A node is accepted when its
token is the model's argmax at its parent and its parent is accepted; the deepest accepted
path is kept (its keys and values gathered into the cache), the model's argmax after its last
node becomes the next root. The output is the model's own greedy decoding, in fewer calls.

Typical acceptance (``acceptance="typical"``, the paper's sampling mode): with p = softmax(z / T)
the model's distribution at a node's parent, the node's token x is accepted when

    p(x) > min(epsilon, delta * exp(-H(p))),   H(p) = -sum_v p(v) log p(v)

(delta = sqrt(epsilon) unless given), and each root is drawn from p at the last accepted node, so
every call keeps at least one token. It does not sample the model's own distribution exactly
(a confident model accepts its likely guesses, an unsure one only its most likely ones); at
T = 0 it is greedy acceptance. :func:`lamina.models.medusa_generate_batch` decodes several
prompts at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, Parameter
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.text.generate import caching_keys_values

__all__ = ["MedusaHeads", "MedusaOutput", "MedusaTree", "cartesian_tree", "medusa_decode", "medusa_generate",
           "medusa_loss", "medusa_tree", "typical_acceptance"]


@register_layer
class MedusaHeads(Module):
    """K = ``num_heads`` Medusa heads on final hidden states (N, T, ``hidden``) -> scores
    (N, T, K, ``vocab_size``), head k guessing the token k + 2 steps after each position (see
    the module docstring for the formula). ``num_layers`` residual SiLU blocks per head;
    ``dtype`` the weights' (lamina's default when None). Weights: ``block_weight`` (K, L, H, H)
    and ``block_bias`` (K, L, H), zero at the start, and ``out_weight`` (K, H, V), N(0, 1 / H)
    until :meth:`load_lm_head` copies the model's."""

    def __init__(self, hidden: int, vocab_size: int, num_heads: int, num_layers: int = 1, dtype=None,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "MedusaHeads: hidden")
        self.vocab_size = positive_int(vocab_size, "MedusaHeads: vocab_size")
        self.num_heads = positive_int(num_heads, "MedusaHeads: num_heads")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"MedusaHeads: num_layers must be an int >= 0, got {num_layers!r}")
        self.num_layers = num_layers
        self.dtype = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
        xp = backend.xp
        k, n, h = num_heads, num_layers, hidden
        self.block_weight = Parameter(xp.zeros((k, n, h, h), dtype=self.dtype), dtype=self.dtype)
        self.block_bias = Parameter(xp.zeros((k, n, h), dtype=self.dtype), dtype=self.dtype)
        out = initializers.normal(std=1.0 / math.sqrt(hidden)).draw((k, h, vocab_size), self.dtype)
        self.out_weight = Parameter(xp.asarray(out, dtype=self.dtype), dtype=self.dtype)
        self.built = True

    def load_lm_head(self, weight) -> None:
        """Start every head's output matrix U_k as the model's (``hidden``, ``vocab_size``) one
        (logits = h @ weight; for GPT-2, whose head is tied to the token table, wte.weight^T)."""
        w = np.asarray(weight.numpy() if isinstance(weight, Tensor) else weight)
        if w.shape != (self.hidden, self.vocab_size):
            raise ValueError(f"{self._label()}: load_lm_head takes a ({self.hidden}, {self.vocab_size}) matrix "
                             f"(logits = hidden @ weight), got {w.shape}")
        self.out_weight.data = backend.xp.asarray(np.broadcast_to(w, self.out_weight.shape), dtype=self.dtype).copy()

    def forward(self, hidden) -> Tensor:
        h = hidden if isinstance(hidden, Tensor) else tensor(np.asarray(hidden, dtype=self.dtype))
        if h.ndim < 1 or h.shape[-1] != self.hidden:
            raise ValueError(f"{self._label()}: expected hidden states (..., {self.hidden}), got {tuple(h.shape)}")
        scores = []
        for k in range(self.num_heads):
            x = h
            for layer in range(self.num_layers):
                x = F.add(x, F.silu(F.add(F.matmul(x, self.block_weight[k, layer]), self.block_bias[k, layer])))
            scores.append(F.matmul(x, self.out_weight[k]))
        return F.stack(scores, axis=-2)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_heads, self.vocab_size)

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "vocab_size": self.vocab_size, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "dtype": self.dtype.name, "name": self.name}

    def extra_repr(self) -> str:
        return (f"hidden={self.hidden}, vocab_size={self.vocab_size}, num_heads={self.num_heads}, "
                f"num_layers={self.num_layers}")


def medusa_loss(head_scores, ids, decay: float = 0.8, weights: Sequence[float] | None = None) -> Tensor:
    """Medusa-1's loss sum_k lambda_k mean_t CE(head_scores[:, t, k], ids[:, t + k + 2]) over the
    positions t < T - k - 2 that have a target; ``head_scores`` (N, T, K, V) from
    :class:`MedusaHeads`, ``ids`` (N, T) the tokens read; lambda_k = ``weights[k]`` or
    ``decay`` ** k."""
    scores = head_scores if isinstance(head_scores, Tensor) else tensor(np.asarray(head_scores))
    targets = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
    if scores.ndim != 4 or targets.shape != tuple(scores.shape[:2]):
        raise ValueError(f"medusa_loss: expected head scores (N, T, K, V) and ids (N, T), got "
                         f"{tuple(scores.shape)} and {targets.shape}")
    n, t, k_heads, v = scores.shape
    lambdas = [decay ** k for k in range(k_heads)] if weights is None else [float(w) for w in weights]
    if len(lambdas) != k_heads:
        raise ValueError(f"medusa_loss: {len(lambdas)} weights for {k_heads} heads")
    total = None
    for k in range(k_heads):
        steps = t - k - 2
        if steps <= 0:
            continue
        logits = F.reshape(scores[:, :steps, k], (n * steps, v))
        term = F.mul(F.cross_entropy(logits, targets[:, k + 2:].reshape(-1)), lambdas[k])
        total = term if total is None else F.add(total, term)
    if total is None:
        raise ValueError(f"medusa_loss: a sequence of {t} tokens gives no head a target (needs T >= 3)")
    return total


# -- candidate trees -------------------------------------------------------------------------
@dataclass(frozen=True)
class MedusaTree:
    """A tree of candidates: ``paths[i]`` the top-token ranks leading to node i (node 0 the root,
    ``()``, the model's own token), ``parent`` (n,) (-1 for the root), ``depth`` (n,), ``rank``
    (n,) the rank of node i's token among head depth - 1's scores, ``mask`` (n, n) True where
    node i sees node j (its ancestors and itself), ``top`` (K,) the tokens each head offers."""

    paths: tuple[tuple[int, ...], ...]
    parent: np.ndarray
    depth: np.ndarray
    rank: np.ndarray
    mask: np.ndarray
    top: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def attention_mask(self, prefix: int) -> np.ndarray:
        """(n, prefix + n) boolean: every node sees the ``prefix`` cached steps, then ``mask``."""
        return np.concatenate([np.ones((len(self), prefix), dtype=bool), self.mask], axis=1)

    def position_ids(self, prefix: int) -> np.ndarray:
        """(n,): prefix + depth, each node's position in its own continuation."""
        return prefix + self.depth


def medusa_tree(choices: Iterable[Sequence[int]]) -> MedusaTree:
    """The tree of the paths ``choices`` (the paper's ``medusa_choices``): each a tuple of ranks
    (i_1, ..., i_d), i_j the rank among head j - 1's top tokens; every prefix of a path must be
    a path too. The nodes are ordered by depth, then path (the root first)."""
    paths = sorted({tuple(int(i) for i in path) for path in choices} - {()}, key=lambda p: (len(p), p))
    known = {(): 0}
    for path in paths:
        if any(i < 0 for i in path):
            raise ValueError(f"medusa_tree: ranks must be >= 0, got the path {path}")
        if path[:-1] not in known:
            raise ValueError(f"medusa_tree: the path {path} has no parent {path[:-1]} among the choices")
        known[path] = len(known)
    nodes = [(), *paths]
    parent = np.array([-1] + [known[p[:-1]] for p in paths], dtype=np.int64)
    depth = np.array([len(p) for p in nodes], dtype=np.int64)
    rank = np.array([0] + [p[-1] for p in paths], dtype=np.int64)
    mask = np.eye(len(nodes), dtype=bool)
    for i in range(1, len(nodes)):
        mask[i] |= mask[parent[i]]
    top = tuple(max((p[d] + 1 for p in paths if len(p) > d), default=0) for d in range(int(depth.max())))
    return MedusaTree(tuple(nodes), parent, depth, rank, mask, top)


def cartesian_tree(sizes: Sequence[int]) -> MedusaTree:
    """The full tree: at depth d every one of the top ``sizes[d - 1]`` tokens of head d - 1
    under every node of depth d - 1 (prod(sizes[:d]) nodes at depth d)."""
    choices = [path for d in range(1, len(sizes) + 1)
               for path in itertools.product(*(range(positive_int(s, "cartesian_tree: sizes")) for s in sizes[:d]))]
    return medusa_tree(choices)


# -- acceptance --------------------------------------------------------------------------------
def typical_acceptance(logits, tokens, temperature: float = 0.7, epsilon: float = 0.09,
                       delta: float | None = None) -> np.ndarray:
    """Typical acceptance (Cai et al., 2024): True where ``tokens[i]`` has
    p(x) > min(``epsilon``, ``delta`` exp(-H(p))) under p = softmax(``logits[i]`` / temperature),
    ``logits`` (..., V) the model's scores before each token and ``tokens`` (...); delta =
    sqrt(epsilon) when None. At ``temperature`` 0, True where the token is the argmax."""
    z = np.asarray(logits, dtype=np.float64)
    x = np.asarray(tokens, dtype=np.int64)
    if z.ndim < 1 or x.shape != z.shape[:-1]:
        raise ValueError(f"typical_acceptance: expected logits (..., V) and tokens (...), got {z.shape} and {x.shape}")
    if x.size and not (0 <= x.min() and x.max() < z.shape[-1]):
        raise ValueError(f"typical_acceptance: tokens must lie in [0, {z.shape[-1]}), got [{x.min()}, {x.max()}]")
    _check_typical(temperature, epsilon, delta, "typical_acceptance")
    if temperature == 0:
        return x == np.argmax(z, axis=-1)
    z = z / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    entropy = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)
    threshold = np.minimum(epsilon, (math.sqrt(epsilon) if delta is None else delta) * np.exp(-entropy))
    return np.take_along_axis(p, x[..., None], axis=-1)[..., 0] > threshold


def _check_typical(temperature, epsilon, delta, who: str) -> None:
    if not temperature >= 0 or not epsilon > 0 or not (delta is None or delta >= 0):
        raise ValueError(f"{who}: needs temperature >= 0, epsilon > 0 and delta >= 0 (or None), got "
                         f"temperature={temperature!r}, epsilon={epsilon!r}, delta={delta!r}")


class _Acceptance:
    """How a decoding step keeps guesses and picks each root: greedy, or typical (seeded)."""

    def __init__(self, acceptance: str, temperature: float, epsilon: float, delta: float | None, seed, who: str):
        if acceptance not in ("greedy", "typical"):
            raise ValueError(f"{who}: acceptance must be 'greedy' or 'typical', got {acceptance!r}")
        _check_typical(temperature, epsilon, delta, who)
        self.temperature = 0.0 if acceptance == "greedy" else float(temperature)
        self.epsilon, self.delta = epsilon, delta
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def draw(self, logits: np.ndarray) -> int:
        """The root after a node: the argmax (T = 0) or a draw from softmax(logits / T)."""
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        p = np.exp(z - z.max())
        return int(self.rng.choice(len(p), p=p / p.sum()))

    def path(self, tree: MedusaTree, node_tokens: np.ndarray, logits: np.ndarray, usable: int | None = None) -> list:
        """The deepest path of accepted nodes (the first such among equals), root first; only
        the first ``usable`` nodes count (a tree pruned for this row)."""
        keep = typical_acceptance(logits[tree.parent[1:]], node_tokens[1:], self.temperature, self.epsilon,
                                  self.delta)
        ok = np.zeros(len(tree), dtype=bool)
        ok[0] = True
        for i in range(1, len(tree) if usable is None else usable):      # parents come first
            ok[i] = ok[tree.parent[i]] and keep[i - 1]
        end = int(np.argmax(np.where(ok, tree.depth, -1)))
        path = [end]
        while tree.parent[path[-1]] >= 0:
            path.append(int(tree.parent[path[-1]]))
        return path[::-1]


# -- decoding ------------------------------------------------------------------------------------
@dataclass
class MedusaOutput:
    """``tokens`` (new,) the continuation; ``accepted`` the tokens kept by each verification
    call (1 + accepted guesses); ``mean_accepted_length`` their mean (1.0 for plain decoding)."""

    tokens: np.ndarray
    accepted: list[int]

    @property
    def mean_accepted_length(self) -> float:
        return float(np.mean(self.accepted)) if self.accepted else 0.0


def _as_tree(tree, num_heads: int) -> MedusaTree:
    if tree is None:
        tree = cartesian_tree([2] * min(num_heads, 2))
    elif not isinstance(tree, MedusaTree):
        tree = medusa_tree(tree)
    if len(tree.top) > num_heads:
        raise ValueError(f"medusa_generate: the tree is {len(tree.top)} deep and there are {num_heads} heads")
    return tree


def _pruned(tree: MedusaTree, depth: int, room: int | None) -> MedusaTree:
    """The first nodes of ``tree`` (ordered by depth, so a tree again) down to ``depth`` and at
    most ``room`` of them (at least the root): no guess past the tokens still wanted, no
    position past the model's context."""
    count = int(np.searchsorted(tree.depth, depth, side="right"))
    if room is not None:
        count = max(1, min(count, room))
    return tree if count == len(tree) else medusa_tree(tree.paths[1:count])


def _commit(model, steps: np.ndarray) -> None:
    """Keep the cached steps ``steps`` in every attention layer; the position layers count them."""
    for layer in model.modules():
        if isinstance(layer, MultiHeadAttention) and layer.caching:
            layer.keep_cache_steps(steps)
    for layer in model.modules():
        counts = hasattr(layer, "crop_cache") and getattr(layer, "caching", False)
        if counts and not isinstance(layer, MultiHeadAttention):
            layer.crop_cache(len(steps))


def _node_tokens(tree: MedusaTree, root: int, guesses: np.ndarray) -> np.ndarray:
    """(n,) the tree's tokens: the root, then each node's rank among its head's (K, V) scores."""
    ranked = np.argsort(-guesses, axis=-1, kind="stable")
    return np.array([root] + [ranked[d - 1, r] for d, r in zip(tree.depth[1:], tree.rank[1:])], dtype=np.int64)


def _checked_tree(tree, heads: MedusaHeads) -> MedusaTree:
    tree = _as_tree(tree, heads.num_heads)
    if max(tree.top, default=0) > heads.vocab_size:
        raise ValueError(f"medusa_generate: the tree takes the top {max(tree.top)} tokens of a head over "
                         f"{heads.vocab_size} tokens")
    return tree


def _check_model(model, who: str) -> None:
    for method in ("hidden_states", "logits"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"{who}: the model must offer {method}() (as GPT2 does), "
                            f"{type(model).__name__} does not")


def medusa_decode(model, heads: MedusaHeads, prompt, max_new_tokens: int, tree=None,
                  eos_token_id: int | None = None, acceptance: str = "greedy", temperature: float = 0.7,
                  epsilon: float = 0.09, delta: float | None = None, seed=None) -> MedusaOutput:
    """:func:`medusa_generate` on a model already caching (inside
    :func:`lamina.text.caching_keys_values`, ``eval()``, ``no_grad``), whose caches it leaves
    holding the prompt and every new token but the last, as plain decoding does."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    steps = int(max_new_tokens)
    if prompt.size == 0 or steps < 1:
        raise ValueError(f"medusa_generate: needs a prompt of >= 1 token and max_new_tokens >= 1, got "
                         f"{prompt.size} tokens and {max_new_tokens!r}")
    rule = _Acceptance(acceptance, temperature, epsilon, delta, seed, "medusa_generate")
    full = _checked_tree(tree, heads)
    hidden = model.hidden_states(tensor(prompt[None]))
    last = hidden[:, -1:]
    root = rule.draw(model.logits(last).numpy()[0, -1])
    held = prompt.size
    tokens, accepted = [root], []
    context = getattr(model, "max_len", None)
    while len(tokens) < steps and eos_token_id not in tokens:
        tree = _pruned(full, steps - len(tokens) - 1, None if context is None else context - held)
        node_tokens = _node_tokens(tree, root, heads(last).numpy()[0, 0])
        hidden = model.hidden_states(tensor(node_tokens[None]), position_ids=tree.position_ids(held)[None],
                                     mask=tree.attention_mask(held))
        logits = model.logits(hidden).numpy()[0]          # the model's scores after each node
        path = rule.path(tree, node_tokens, logits)
        _commit(model, np.concatenate([np.arange(held), held + np.array(path)]))
        held += len(path)
        accepted.append(len(path))
        root = rule.draw(logits[path[-1]])
        tokens.extend([int(t) for t in node_tokens[path[1:]]] + [root])
        last = hidden[:, path[-1]:path[-1] + 1]
    tokens = tokens[:steps]
    if eos_token_id is not None and eos_token_id in tokens:
        tokens = tokens[:tokens.index(eos_token_id) + 1]
    if held > prompt.size + len(tokens) - 1:          # the last call overshot: hold what plain decoding would
        _commit(model, np.arange(prompt.size + len(tokens) - 1))
    return MedusaOutput(np.array(tokens, dtype=np.int64), accepted)


def medusa_generate(model, heads: MedusaHeads, prompt, max_new_tokens: int, tree=None,
                    eos_token_id: int | None = None, acceptance: str = "greedy", temperature: float = 0.7,
                    epsilon: float = 0.09, delta: float | None = None, seed=None) -> MedusaOutput:
    """Medusa decoding of one ``prompt`` (T,) for ``max_new_tokens`` (stopping after
    ``eos_token_id`` when given), and the mean number of tokens each call of the model kept.
    ``acceptance="greedy"``: the same tokens as the model's greedy decoding. ``"typical"``:
    typical acceptance at ``temperature`` with ``epsilon`` and ``delta`` (see
    :func:`typical_acceptance`), the roots drawn with ``seed`` (an int or a
    ``numpy.random.Generator``); it changes the distribution of the text (see the module
    docstring). ``tree``: a :class:`MedusaTree`, a list of paths for :func:`medusa_tree`, or
    None (the top 2 of the first two heads, 7 nodes). The model must offer
    ``hidden_states(ids, position_ids=, mask=)`` and ``logits(hidden)``:
    :class:`~lamina.models.GPT2`, and :class:`~lamina.models.Llama` and the models whose
    layers are its decoder layer (not with a sliding window)."""
    _check_model(model, "medusa_generate")
    was_training = model.training
    model.eval()
    try:
        with no_grad(), caching_keys_values(model):
            return medusa_decode(model, heads, prompt, max_new_tokens, tree, eos_token_id, acceptance, temperature,
                                 epsilon, delta, seed)
    finally:
        model.train(was_training)
