"""Unpaired preference data for KTO: (prompt, completion, desirable or not) rows of token ids.

A batch of N rows holds the rows themselves, prompt + completion right-padded with
``pad_token_id``, and N mismatched rows for KTO's KL estimate, as TRL's ``KTOTrainer``: the
completions shifted by one within the batch, so that row i's prompt is paired with row i - 1's
completion (row 0's with the last row's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina.train.preference_data import PreferenceDataset, _id_lists, cut_row, pad_rows

__all__ = ["CompletionRows", "UnpairedBatch", "UnpairedPreferenceDataset", "kl_completion_order"]


def kl_completion_order(size: int) -> np.ndarray:
    """Which row's completion goes with each prompt of a batch of ``size`` rows in the KL batch:
    the previous row's (TRL's shift by one), ``[size - 1, 0, 1, ..., size - 2]``."""
    return np.roll(np.arange(size), 1)


@dataclass
class CompletionRows:
    """``input_ids``, ``attention_mask`` and ``completion_mask`` of N prompt + completion rows, (N, T)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    completion_mask: np.ndarray


@dataclass
class UnpairedBatch:
    """One collated batch of N rows (see the module notes): ``input_ids``, ``attention_mask`` and
    ``completion_mask`` (N, T), ``labels`` (N,) True for the desirable completions, ``kl`` the
    mismatched rows of the KL estimate."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    completion_mask: np.ndarray
    labels: np.ndarray
    kl: CompletionRows

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def desirable(self) -> np.ndarray:
        return np.flatnonzero(self.labels)

    @property
    def undesirable(self) -> np.ndarray:
        return np.flatnonzero(~self.labels)


class UnpairedPreferenceDataset:
    """Completions judged one at a time: ``prompts`` and ``completions`` equally long sequences of
    token-id sequences (a completion excludes its prompt, both need at least one token) and
    ``labels`` one bool per row, True for a desirable completion. ``pad_token_id`` and
    ``max_length`` as :class:`~lamina.train.PreferenceDataset`'s."""

    def __init__(self, prompts: Sequence, completions: Sequence, labels: Sequence, pad_token_id: int = 0,
                 max_length: int | None = None):
        who = "UnpairedPreferenceDataset"
        self.prompts = _id_lists(prompts, "prompts", who)
        self.completions = _id_lists(completions, "completions", who)
        self.labels = np.asarray(labels)
        if self.labels.dtype != bool:
            raise TypeError(f"{who}: labels must be bools (True: desirable), got dtype {self.labels.dtype}")
        if not len(self.prompts) == len(self.completions) == self.labels.size or self.labels.ndim != 1:
            raise ValueError(f"{who}: got {len(self.prompts)} prompts, {len(self.completions)} completions and labels "
                             f"of shape {self.labels.shape}; there must be one of each per row")
        if not self.labels.size:
            raise ValueError(f"{who}: no rows: both the desirable and the undesirable sets are empty")
        for what, rows in (("prompts", self.prompts), ("completions", self.completions)):
            empty = [i for i, row in enumerate(rows) if not row.size]
            if empty:
                raise ValueError(f"{who}: {what} {empty[:5]} are empty; each needs at least one token")
        # the checks of pad_token_id and max_length are PreferenceDataset's
        checked = PreferenceDataset([[0]], [[0]], [[0]], pad_token_id=pad_token_id, max_length=max_length)
        self.pad_token_id, self.max_length = checked.pad_token_id, checked.max_length

    @classmethod
    def from_pairs(cls, pairs: PreferenceDataset) -> UnpairedPreferenceDataset:
        """The unpaired rows of preference pairs: each prompt with its chosen completion
        (desirable), then each with its rejected one (undesirable)."""
        if not isinstance(pairs, PreferenceDataset):
            raise TypeError(f"UnpairedPreferenceDataset.from_pairs: expected a PreferenceDataset, got "
                            f"{type(pairs).__name__}")
        n = len(pairs)
        return cls(pairs.prompts * 2, pairs.chosen + pairs.rejected, np.arange(2 * n) < n,
                   pad_token_id=pairs.pad_token_id, max_length=pairs.max_length)

    @property
    def num_desirable(self) -> int:
        return int(self.labels.sum())

    @property
    def num_undesirable(self) -> int:
        return int(self.labels.size - self.labels.sum())

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.prompts[i], self.completions[i], bool(self.labels[i])

    def _rows(self, prompts: list[int], completions: list[int]) -> CompletionRows:
        rows = [cut_row(self.prompts[p], self.completions[c], self.max_length) for p, c in zip(prompts, completions)]
        return CompletionRows(*pad_rows(rows, self.pad_token_id))

    def collate(self, indices) -> UnpairedBatch:
        """The rows at ``indices`` as one :class:`UnpairedBatch` with its KL rows."""
        indices = [int(i) for i in np.asarray(indices).ravel()]
        rows = self._rows(indices, indices)
        kl = self._rows(indices, [indices[j] for j in kl_completion_order(len(indices))])
        return UnpairedBatch(rows.input_ids, rows.attention_mask, rows.completion_mask, self.labels[indices], kl)

    batches = PreferenceDataset.batches
