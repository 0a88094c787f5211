"""The memory access of the differentiable neural computer (Graves et al. 2016, Nature,
Methods): a memory M (N slots of W values) read by R heads and written by one, addressed by
content, by dynamic allocation of free slots and by the temporal order of the writes.

Each step takes the controller's interface vector xi_t, split by :func:`parse_interface` into
read keys k^r_i and strengths beta^r_i, a write key k^w and strength beta^w, an erase vector e,
a write vector v, free gates f_i, the allocation gate g^a, the write gate g^w and the read modes
pi_i (strengths through oneplus(x) = 1 + log(1 + e^x), gates and e through the sigmoid, pi_i a
softmax over three modes). Then, in order:

    retention:   psi_t = prod_i (1 - f_i w^r_{t-1,i})
    usage:       u_t = (u_{t-1} + w^w_{t-1} - u_{t-1} * w^w_{t-1}) * psi_t
    allocation:  a_t[phi_j] = (1 - u_t[phi_j]) prod_{i<j} u_t[phi_i],  phi the slots by usage, ascending
    writing:     w^w_t = g^w (g^a a_t + (1 - g^a) C(M_{t-1}, k^w, beta^w))
                 M_t = M_{t-1} * (E - w^w_t e^T) + w^w_t v^T
    links:       L_t[i, j] = (1 - w^w_t[i] - w^w_t[j]) L_{t-1}[i, j] + w^w_t[i] p_{t-1}[j],  L_t[i, i] = 0
                 p_t = (1 - sum_i w^w_t[i]) p_{t-1} + w^w_t
    reading:     f^i_t = L_t w^r_{t-1,i},  b^i_t = L_t^T w^r_{t-1,i}
                 w^r_{t,i} = pi_i[0] b^i_t + pi_i[1] C(M_t, k^r_i, beta^r_i) + pi_i[2] f^i_t
                 r_{t,i} = M_t^T w^r_{t,i}

with C(M, k, beta)[n] = softmax_n(beta cos(k, M_n)) the content weighting. The sort order phi
is a constant of the step (no gradient flows through it); the gradient reaches the usages
gathered in that order, as in the published implementation. Equal usages keep their slot order.
:func:`memory_step` is the whole step on a :class:`DNCMemoryState`.
"""

from __future__ import annotations

from typing import NamedTuple

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["DNCMemoryState", "allocation_weighting", "content_weighting", "interface_size", "link_update",
           "memory_step", "oneplus", "parse_interface", "temporal_weightings", "usage_update"]


class DNCMemoryState(NamedTuple):
    """The memory's state between steps: ``memory`` (B, N, W), ``usage`` (B, N), ``link``
    (B, N, N), ``precedence`` (B, N), ``read_weights`` (B, R, N), ``write_weights`` (B, N)."""

    memory: Tensor
    usage: Tensor
    link: Tensor
    precedence: Tensor
    read_weights: Tensor
    write_weights: Tensor

    @classmethod
    def zeros(cls, batch: int, slots: int, word_size: int, read_heads: int) -> DNCMemoryState:
        """The initial state: everything zero (an empty, unused memory)."""
        dtype, xp = backend.get_default_dtype(), backend.xp

        def zero(*shape):
            return Tensor._wrap(xp.zeros(shape, dtype=dtype))

        return cls(zero(batch, slots, word_size), zero(batch, slots), zero(batch, slots, slots), zero(batch, slots),
                   zero(batch, read_heads, slots), zero(batch, slots))


def oneplus(x) -> Tensor:
    """oneplus(x) = 1 + log(1 + e^x), a strength in [1, inf)."""
    return F.add(1.0, F.softplus(x))


def interface_size(word_size: int, read_heads: int) -> int:
    """The length of the interface vector: R W + 3 W + 5 R + 3."""
    return read_heads * word_size + 3 * word_size + 5 * read_heads + 3


def parse_interface(interface: Tensor, word_size: int, read_heads: int) -> dict[str, Tensor]:
    """Split xi (B, R W + 3 W + 5 R + 3) into its named parts, squashed: ``read_keys`` (B, R, W),
    ``read_strengths`` (B, R), ``write_key`` (B, W), ``write_strength`` (B, 1), ``erase`` (B, W),
    ``write_vector`` (B, W), ``free_gates`` (B, R), ``allocation_gate`` and ``write_gate``
    (B, 1), ``read_modes`` (B, R, 3) (backward, content, forward)."""
    w, r = word_size, read_heads
    if interface.ndim != 2 or interface.shape[-1] != interface_size(w, r):
        raise ShapeError(f"parse_interface: expected an interface vector of shape (batch, R W + 3 W + 5 R + 3) = "
                         f"(batch, {interface_size(w, r)}) for W = {w}, R = {r}; got {tuple(interface.shape)}")
    batch, sizes = interface.shape[0], [r * w, r, w, 1, w, w, r, 1, 1, 3 * r]
    parts, start = [], 0
    for size in sizes:
        parts.append(F.getitem(interface, (slice(None), slice(start, start + size))))
        start += size
    keys, strengths, write_key, write_strength, erase, vector, free, alloc, gate, modes = parts
    return {"read_keys": F.reshape(keys, (batch, r, w)), "read_strengths": oneplus(strengths),
            "write_key": write_key, "write_strength": oneplus(write_strength), "erase": F.sigmoid(erase),
            "write_vector": vector, "free_gates": F.sigmoid(free), "allocation_gate": F.sigmoid(alloc),
            "write_gate": F.sigmoid(gate), "read_modes": F.softmax(F.reshape(modes, (batch, r, 3)), axis=-1)}


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor, eps: float = 1e-8) -> Tensor:
    """C (B, H, N) = softmax over the slots of beta_h cos(k_h, M_n) for H keys (B, H, W) with
    strengths (B, H) and the memory (B, N, W)."""
    similarity = F.cosine_similarity(F.expand_dims(memory, 1), F.expand_dims(keys, 2), axis=-1, eps=eps)
    return F.softmax(F.mul(F.expand_dims(strengths, -1), similarity), axis=-1)


def usage_update(usage: Tensor, write_weights: Tensor, free_gates: Tensor, read_weights: Tensor) -> Tensor:
    """u_t = (u + w^w - u * w^w) * psi, psi = prod_i (1 - f_i w^r_i): usage and previous write
    weighting (B, N), free gates (B, R), previous read weightings (B, R, N)."""
    used = F.sub(F.add(usage, write_weights), F.mul(usage, write_weights))
    retention = F.prod(F.sub(1.0, F.mul(F.expand_dims(free_gates, -1), read_weights)), axis=1)
    return F.mul(used, retention)


def allocation_weighting(usage: Tensor) -> Tensor:
    """a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i], phi the slots sorted by usage (B, N),
    ascending and stable; the order is held constant, the gathered usages carry the gradient."""
    order = backend.xp.argsort(usage.numpy(), axis=-1, kind="stable")
    inverse = backend.xp.argsort(order, axis=-1, kind="stable")
    ordered = F.take_along_dim(usage, order, axis=-1)
    ones = Tensor._wrap(backend.xp.ones((usage.shape[0], 1), dtype=ordered.dtype))
    before = F.cumprod(F.concat([ones, F.getitem(ordered, (slice(None), slice(None, -1)))], axis=-1), axis=-1)
    return F.take_along_dim(F.mul(F.sub(1.0, ordered), before), inverse, axis=-1)


def link_update(link: Tensor, precedence: Tensor, write_weights: Tensor) -> tuple[Tensor, Tensor]:
    """(L_t, p_t) from L_{t-1} (B, N, N), p_{t-1} (B, N) and the new write weighting (B, N):
    L_t[i, j] = (1 - w_i - w_j) L[i, j] + w_i p_j with a zero diagonal, p_t = (1 - sum w) p + w."""
    w_i, w_j = F.expand_dims(write_weights, 2), F.expand_dims(write_weights, 1)
    link = F.add(F.mul(F.sub(F.sub(1.0, w_i), w_j), link), F.mul(w_i, F.expand_dims(precedence, 1)))
    off_diagonal = 1 - backend.xp.eye(link.shape[-1], dtype=link.dtype)
    link = F.mul(link, Tensor._wrap(off_diagonal))
    written = F.sum(write_weights, axis=-1, keepdims=True)
    return link, F.add(F.mul(F.sub(1.0, written), precedence), write_weights)


def temporal_weightings(link: Tensor, read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """The forward f_i = L w^r_i and backward b_i = L^T w^r_i weightings (B, R, N) of the
    previous read weightings (B, R, N)."""
    return F.einsum("bij,brj->bri", link, read_weights), F.einsum("bji,brj->bri", link, read_weights)


def memory_step(interface: Tensor, state: DNCMemoryState) -> tuple[Tensor, DNCMemoryState, dict[str, Tensor]]:
    """One memory step (module notes): the reads r_t (B, R, W), the new state, and the parsed
    interface with the step's ``allocation`` and ``content`` (write) weightings added."""
    batch, slots, word = state.memory.shape
    heads = state.read_weights.shape[1]
    for what, value, shape in (("usage", state.usage, (batch, slots)), ("link", state.link, (batch, slots, slots)),
                               ("precedence", state.precedence, (batch, slots)),
                               ("read_weights", state.read_weights, (batch, heads, slots)),
                               ("write_weights", state.write_weights, (batch, slots))):
        if tuple(value.shape) != shape:
            raise ShapeError(f"memory_step: the state's {what} has shape {tuple(value.shape)}; expected {shape} for "
                             f"a memory of shape {(batch, slots, word)} and {heads} read heads")
    parts = parse_interface(interface, word, heads)
    usage = usage_update(state.usage, state.write_weights, parts["free_gates"], state.read_weights)
    allocation = allocation_weighting(usage)
    write_content = F.reshape(content_weighting(state.memory, F.expand_dims(parts["write_key"], 1),
                                                parts["write_strength"]), (batch, slots))
    gate = parts["allocation_gate"]
    write_weights = F.mul(parts["write_gate"], F.add(F.mul(gate, allocation), F.mul(F.sub(1.0, gate), write_content)))
    w = F.expand_dims(write_weights, 2)
    memory = F.add(F.mul(state.memory, F.sub(1.0, F.mul(w, F.expand_dims(parts["erase"], 1)))),
                   F.mul(w, F.expand_dims(parts["write_vector"], 1)))
    link, precedence = link_update(state.link, state.precedence, write_weights)
    forward, backward = temporal_weightings(link, state.read_weights)
    content = content_weighting(memory, parts["read_keys"], parts["read_strengths"])
    modes = parts["read_modes"]

    def mode(k: int) -> Tensor:
        return F.getitem(modes, (slice(None), slice(None), slice(k, k + 1)))

    read_weights = F.add(F.add(F.mul(mode(0), backward), F.mul(mode(1), content)), F.mul(mode(2), forward))
    reads = F.einsum("brn,bnw->brw", read_weights, memory)
    internals = {**parts, "usage": usage, "allocation": allocation, "write_content": write_content}
    return reads, DNCMemoryState(memory, usage, link, precedence, read_weights, write_weights), internals
