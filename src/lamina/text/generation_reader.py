"""Reading a causal language model during generation: the prompts once, then the new tokens.

:class:`_Reader` feeds one model the growing token ids of a batch, through its key/value
cache (a causal Transformer), its carried states (a streamable recurrent model such as
Mamba), or by rerunning on the whole text; it keeps count of the tokens the model holds,
reorders its caches for beam search and rewinds them for speculative decoding. A left-padded
batch goes to an attention model as ``key_mask`` and ``position_ids`` = cumsum(mask) - 1, to
a recurrent one as the ``attention_mask`` of each call's steps.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np

from lamina.autograd import Tensor, no_grad, tensor
from lamina.text.generate import (
    _cache_layers,
    _decodes_incrementally,
    caching_keys_values,
    carrying_states,
    reorder_caches,
)

_WHO = "generate_ids"


def _forward_options(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


class _Reader:
    """Feeds one model the tokens of a batch: through its key/value cache, its carried
    states, or by rerunning on the whole text; keeps the count of tokens it holds."""

    def __init__(self, model, padded: bool):
        self.model = model
        options = _forward_options(model)
        self.key_mask = padded and "key_mask" in options
        self.step_mask = padded and not self.key_mask and "attention_mask" in options
        self.positions = padded and "position_ids" in options
        if _decodes_incrementally(model):
            self.mode = "cache"
        elif getattr(model, "streamable", False):
            self.mode = "carry"
        else:
            self.mode = "rerun"
        self.held = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Reader:
        self._was_training = getattr(self.model, "training", False)
        self.model.eval()
        self._stack.enter_context(no_grad())
        self._stack.enter_context(carrying_states(self.model, carry=self.mode == "carry"))
        if self.mode == "cache":
            self._stack.enter_context(caching_keys_values(self.model))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.model.train(self._was_training)

    def read(self, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The scores (B, t, V) of the tokens ``ids[:, held:]`` (t of them), the whole text
        ``ids`` (B, S) being what the rows hold after; ``mask`` (B, S) or None."""
        start = 0 if self.mode == "rerun" else self.held
        kwargs = {}
        if self.key_mask and mask is not None:
            kwargs["key_mask"] = tensor(mask.astype(bool))
        if self.step_mask and mask is not None:
            kwargs["attention_mask"] = mask[:, start:]
        if self.positions and mask is not None:
            kwargs["position_ids"] = _positions(mask)[:, start:]
        scores = self.model(tensor(ids[:, start:]), **kwargs)
        scores = scores.numpy() if isinstance(scores, Tensor) else np.asarray(scores)
        new = ids.shape[1] - self.held
        self.held = ids.shape[1]
        if scores.ndim != 3 or scores.shape[:2] != (len(ids), ids.shape[1] - start):
            raise ValueError(f"{_WHO}: the model must map ids {(len(ids), ids.shape[1] - start)} to scores "
                             f"(B, T, V), got {scores.shape}")
        return scores[:, -new:]

    def reorder(self, rows: np.ndarray) -> None:
        if self.mode != "rerun":
            reorder_caches(self.model, rows)

    def rewind(self, ids: np.ndarray) -> None:
        """Hold only the text ``ids`` (B, S), a prefix of what the rows hold: crop the
        caches where they can be cropped, else start again and read ``ids``."""
        steps = ids.shape[1]
        if self.mode == "rerun" or steps == self.held:
            self.held = steps
            return
        croppable = [m for m in self.model.modules() if hasattr(m, "crop_cache") and getattr(m, "caching", False)]
        if self.mode == "cache":
            try:
                for layer in croppable:
                    layer.crop_cache(steps)
                self.held = steps
                return
            except ValueError:              # a sliding window dropped keys the prefix needs
                for layer in _cache_layers(self.model):
                    layer.stop_caching()
                    layer.start_caching()
        else:
            for layer in self.model.modules():
                if hasattr(layer, "reset_states"):
                    layer.reset_states()
        self.held = 0
        if steps:
            self.read(ids, None)


def _positions(mask: np.ndarray) -> np.ndarray:
    """Hugging Face's position_ids of a left-padded batch: cumsum(mask) - 1, 1 on the pads."""
    positions = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, positions).astype(np.int64)
