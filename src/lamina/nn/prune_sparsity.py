"""Counting the zeros of a module's parameters, pruned or not: :func:`sparsity` and the
:class:`Sparsity` it returns (per parameter and in total)."""

from __future__ import annotations

from dataclasses import dataclass

from lamina.nn.module import Module
from lamina.nn.prune_masks import _pruned

__all__ = ["Sparsity", "sparsity"]


@dataclass(frozen=True)
class Sparsity:
    """The zeros of a module's parameters: ``counts`` maps each dotted parameter name (the name
    the layer reads, ``'0.weight'`` for a pruned ``'0.weight_orig'``) to (zero entries, entries)
    of the value the forward uses."""

    counts: dict[str, tuple[int, int]]

    @property
    def fraction(self) -> float:
        """The fraction of zero entries over all the parameters counted."""
        total = sum(size for _, size in self.counts.values())
        return sum(zeros for zeros, _ in self.counts.values()) / total if total else 0.0

    def __getitem__(self, name: str) -> float:
        """The fraction of zero entries of one parameter."""
        zeros, size = self.counts[name]
        return zeros / size if size else 0.0

    def __str__(self) -> str:
        width = max([len(name) for name in self.counts] + [5])
        digits = max([len(str(size)) for _, size in self.counts.values()] + [1])
        lines = [f"{name:<{width}}  {zeros:>{digits}} / {size:<{digits}}  {self[name]:6.1%} zero"
                 for name, (zeros, size) in self.counts.items()]
        lines.append(f"{'total':<{width}}  {'':>{2 * digits + 3}}  {self.fraction:6.1%} zero")
        return "\n".join(lines)


def sparsity(module: Module, pruned_only: bool = False) -> Sparsity:
    """Count the exactly-zero entries of every parameter of ``module`` and its sub-modules (the
    product w_orig * M for a pruned one); ``pruned_only`` counts only the pruned parameters."""
    counts: dict[str, tuple[int, int]] = {}
    seen: set[int] = set()
    for path, owner in module.named_modules():
        pruned = _pruned(owner)
        for key, param in owner._parameters.items():
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = key.removesuffix("_orig") if key.endswith("_orig") and key[:-5] in pruned else None
            if name is None and pruned_only:
                continue
            values = param.data * owner._buffers[name + "_mask"] if name is not None else param.data
            counts[f"{path}.{name or key}" if path else name or key] = (int((values == 0).sum()), int(values.size))
    return Sparsity(counts)
