"""Preference data for language models: (prompt, chosen completion, rejected completion) triples
of token ids, padded and collated into one batch the policy reads in a single call.

A batch of B pairs holds 2B rows, as TRL's concatenated forward pass: rows 0 .. B - 1 are
prompt + chosen, rows B .. 2B - 1 prompt + rejected, all right-padded to the longest row with
``pad_token_id``. Alongside, ``attention_mask`` marks the real tokens and ``completion_mask``
the completion's tokens, the only ones whose log-probabilities are scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.nn.layer import positive_int

__all__ = ["PreferenceBatch", "PreferenceDataset"]


def cut_row(prompt: np.ndarray, completion: np.ndarray, max_length: int | None) -> tuple[np.ndarray, int]:
    """(prompt + completion, the prompt's length), cut to ``max_length``: first the prompt from the
    left (at least one token kept), then the completion from the right."""
    if max_length is not None and prompt.size + completion.size > max_length:
        keep = max(1, max_length - completion.size)
        prompt = prompt[-keep:]
        completion = completion[:max_length - prompt.size]
    return np.concatenate([prompt, completion]), prompt.size


def pad_rows(rows: list[tuple[np.ndarray, int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, completion_mask) of ``cut_row`` rows right-padded to the longest."""
    width = max(ids.size for ids, _ in rows)
    input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    attention = np.zeros((len(rows), width), dtype=bool)
    completion = np.zeros((len(rows), width), dtype=bool)
    for r, (ids, prompt_length) in enumerate(rows):
        input_ids[r, :ids.size] = ids
        attention[r, :ids.size] = True
        completion[r, prompt_length:ids.size] = True
    return input_ids, attention, completion


@dataclass
class PreferenceBatch:
    """One collated batch of ``num_pairs`` pairs (see the module notes): ``input_ids``,
    ``attention_mask`` and ``completion_mask`` of shape (2 num_pairs, T), chosen rows first;
    ``margins`` (num_pairs,) or None."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    completion_mask: np.ndarray
    num_pairs: int
    margins: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_pairs

    @property
    def chosen(self) -> slice:
        return slice(0, self.num_pairs)

    @property
    def rejected(self) -> slice:
        return slice(self.num_pairs, 2 * self.num_pairs)


def _id_lists(values, what: str, who: str) -> list[np.ndarray]:
    rows = []
    for i, row in enumerate(values):
        ids = np.asarray(row)
        if not ids.size:
            ids = ids.astype(np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"{who}: {what}[{i}] must be a 1-D sequence of integer token ids, got "
                            f"{ids.dtype} of shape {ids.shape}")
        if ids.size and ids.min() < 0:
            raise ValueError(f"{who}: {what}[{i}] holds a negative token id ({ids.min()})")
        rows.append(ids.astype(np.int64))
    return rows


class PreferenceDataset:
    """Pairs of completions of the same prompts, the first preferred: ``prompts``, ``chosen`` and
    ``rejected`` are equally long sequences of token-id sequences (a completion excludes its
    prompt). Every prompt needs at least one token (a completion's first token is predicted from
    the prompt's last) and every completion one. ``margins`` (optional, one per pair): how much
    the chosen one is preferred, for :class:`~lamina.train.RewardTrainer`'s margin loss.

    ``max_length``: longer prompt + completion rows are cut to it, first the prompt from the left
    (its last tokens kept, at least one), then the completion from the right.
    """

    def __init__(self, prompts: Sequence, chosen: Sequence, rejected: Sequence, margins=None,
                 pad_token_id: int = 0, max_length: int | None = None):
        who = "PreferenceDataset"
        self.prompts = _id_lists(prompts, "prompts", who)
        self.chosen = _id_lists(chosen, "chosen", who)
        self.rejected = _id_lists(rejected, "rejected", who)
        sizes = {len(self.prompts), len(self.chosen), len(self.rejected)}
        if len(sizes) != 1:
            raise ValueError(f"{who}: got {len(self.prompts)} prompts, {len(self.chosen)} chosen and "
                             f"{len(self.rejected)} rejected completions; there must be one of each per pair")
        for what, rows in (("prompts", self.prompts), ("chosen", self.chosen), ("rejected", self.rejected)):
            empty = [i for i, row in enumerate(rows) if not row.size]
            if empty:
                raise ValueError(f"{who}: {what} {empty[:5]} are empty; each needs at least one token")
        self.margins = None
        if margins is not None:
            self.margins = np.asarray(margins, dtype=np.float64)
            if self.margins.shape != (len(self.prompts),):
                raise ValueError(f"{who}: margins must hold one number per pair ({len(self.prompts)}), got shape "
                                 f"{self.margins.shape}")
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)) or pad_token_id < 0:
            raise ValueError(f"{who}: pad_token_id must be a token id >= 0, got {pad_token_id!r}")
        self.pad_token_id = int(pad_token_id)
        self.max_length = None if max_length is None else positive_int(max_length, f"{who}: max_length")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"{who}: max_length must leave room for a prompt token and a completion token, got "
                             f"{max_length}")

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.prompts[i], self.chosen[i], self.rejected[i]

    def _row(self, prompt: np.ndarray, completion: np.ndarray) -> tuple[np.ndarray, int]:
        return cut_row(prompt, completion, self.max_length)

    def collate(self, indices) -> PreferenceBatch:
        """The pairs at ``indices`` as one :class:`PreferenceBatch`."""
        indices = [int(i) for i in np.asarray(indices).ravel()]
        rows = [self._row(self.prompts[i], self.chosen[i]) for i in indices]
        rows += [self._row(self.prompts[i], self.rejected[i]) for i in indices]
        input_ids, attention, completion = pad_rows(rows, self.pad_token_id)
        margins = None if self.margins is None else self.margins[indices]
        return PreferenceBatch(input_ids, attention, completion, len(indices), margins)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int | None = None) -> Iterator[PreferenceBatch]:
        """Collated batches of ``batch_size`` pairs (rows of an unpaired dataset; the last batch may be
        smaller), in order or shuffled."""
        batch_size = positive_int(batch_size, f"{type(self).__name__}.batches: batch_size")
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.collate(order[start:start + batch_size])
