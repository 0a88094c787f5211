"""``TextVectorization``: raw strings to token ids, or to bag-of-words vectors, Keras style.

Each string (one document) goes through

1. ``standardize``: 'lower_and_strip_punctuation' (lower case, then every ASCII punctuation
   character removed), 'lower', 'strip_punctuation', None, or a callable ``str -> str``;
2. ``split``: 'whitespace' (runs of whitespace separate tokens), 'character' (every
   character, spaces included), None (the whole string is one token), or a callable
   ``str -> list[str]``;
3. ``ngrams``: None (tokens only), an int n (all k-grams for k = 1..n) or a tuple of sizes;
   a k-gram is its k tokens joined by single spaces;
4. a :class:`~lamina.nn.StringLookup` over the learned vocabulary. In 'int' mode the mask
   token '' has index 0 (padding) and '[UNK]' index 1; in the other modes '[UNK]' is 0.

``output_mode='int'`` gives an int64 ``(batch, length)`` tensor of ids, each row padded
with 0 or truncated to ``output_sequence_length`` (default: the longest row of the batch);
'multi_hot', 'count' and 'tf_idf' give a float ``(batch, vocabulary size)`` tensor (width
``max_tokens`` with ``pad_to_max_tokens``). tf-idf uses Keras's idf, see
:mod:`lamina.nn.lookup`. Inputs: a string, or a batch of shape ``(batch,)`` or
``(batch, 1)`` (a list, a NumPy array of strings).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.adapt import PreprocessingLayer, as_array, check_mode, check_not_sparse
from lamina.nn.layer import register_layer
from lamina.nn.lookup import StringLookup

__all__ = ["TextVectorization"]

STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation")
SPLIT = ("whitespace", "character")
MODES = ("int", "multi_hot", "count", "tf_idf")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def _ngram_sizes(ngrams: Any) -> tuple[int, ...]:
    if ngrams is None:
        return (1,)
    sizes = tuple(range(1, ngrams + 1)) if isinstance(ngrams, int) else tuple(ngrams)
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"TextVectorization: ngrams must be None, a positive int or a tuple of them; got {ngrams!r}")
    return sizes


@register_layer
class TextVectorization(PreprocessingLayer):
    """Strings to token ids or bag-of-words vectors; see :mod:`lamina.nn.text_preprocessing`.

    ``max_tokens`` caps the vocabulary learned by :meth:`adapt` (special indices included);
    ``vocabulary`` (and ``idf_weights`` for 'tf_idf') sets it instead. A layer with a
    callable ``standardize`` or ``split`` cannot describe itself in a config (and so cannot
    be saved with :func:`lamina.save`).
    """

    reads_strings = True

    def __init__(self, max_tokens: int | None = None,
                 standardize: str | Callable[[str], str] | None = "lower_and_strip_punctuation",
                 split: str | Callable[[str], list[str]] | None = "whitespace", ngrams: Any = None,
                 output_mode: str = "int", output_sequence_length: int | None = None,
                 pad_to_max_tokens: bool = False, vocabulary: Any = None, idf_weights: Any = None,
                 sparse: bool = False, name: str | None = None):
        super().__init__(name=name)
        if not (standardize is None or callable(standardize) or standardize in STANDARDIZE):
            raise ValueError(f"TextVectorization: standardize must be one of {STANDARDIZE}, None or a callable; "
                             f"got {standardize!r}")
        if not (split is None or callable(split) or split in SPLIT):
            raise ValueError(f"TextVectorization: split must be one of {SPLIT}, None or a callable; got {split!r}")
        self.standardize, self.split = standardize, split
        self.ngrams = ngrams
        self._sizes = _ngram_sizes(ngrams)
        self.output_mode = check_mode(output_mode, MODES, "TextVectorization")
        if output_sequence_length is not None:
            if output_mode != "int":
                raise ValueError("TextVectorization: output_sequence_length is only used with output_mode='int'")
            if isinstance(output_sequence_length, bool) or not isinstance(output_sequence_length, int) \
                    or output_sequence_length < 1:
                raise ValueError(f"TextVectorization: output_sequence_length must be a positive int; got "
                                 f"{output_sequence_length!r}")
        self.output_sequence_length = output_sequence_length
        self.sparse = check_not_sparse(sparse, "TextVectorization")
        self.lookup = StringLookup(max_tokens=max_tokens, num_oov_indices=1,
                                   mask_token="" if output_mode == "int" else None, oov_token="[UNK]",
                                   vocabulary=vocabulary, idf_weights=idf_weights, output_mode=output_mode,
                                   pad_to_max_tokens=pad_to_max_tokens)

    # -- text to tokens ---------------------------------------------------------------------
    def _standardized(self, text: str) -> str:
        if callable(self.standardize):
            return self.standardize(text)
        if self.standardize in ("lower", "lower_and_strip_punctuation"):
            text = text.lower()
        if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
            text = _PUNCTUATION.sub("", text)
        return text

    def tokenize(self, text: str) -> list[str]:
        """The tokens (with n-grams) of one document, before the vocabulary lookup."""
        text = self._standardized(text)
        if callable(self.split):
            words = list(self.split(text))
        elif self.split == "whitespace":
            words = text.split()
        elif self.split == "character":
            words = list(text)
        else:
            words = [text]
        tokens = []
        for n in self._sizes:
            tokens += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        return tokens

    def _documents(self, x: Any) -> tuple[list[str], bool]:
        """The batch as a list of strings, and whether a single string was given."""
        array = as_array(x)
        single = array.ndim == 0
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim > 1:
            raise ShapeError(f"{self._label()}: got strings of shape {array.shape}; expected a batch of shape "
                             "(batch,) or (batch, 1)")
        texts = []
        for value in array.reshape(-1).tolist():
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                raise TypeError(f"{self._label()}: expected strings; got {value!r}")
            texts.append(value)
        return texts, single

    # -- adapt ---------------------------------------------------------------------------------
    def _start_adapt(self) -> None:
        self.lookup._start_adapt()

    def _update_adapt(self, batch: np.ndarray) -> None:
        texts, _ = self._documents(batch)
        self.lookup.count_documents([self.tokenize(t) for t in texts])

    def _finish_adapt(self) -> None:
        self.lookup._finish_adapt()

    @property
    def is_adapted(self) -> bool:
        return self.lookup.is_adapted

    def get_vocabulary(self, include_special_tokens: bool = True) -> list[str]:
        return self.lookup.get_vocabulary(include_special_tokens)

    def vocabulary_size(self) -> int:
        return self.lookup.vocabulary_size()

    def set_vocabulary(self, vocabulary: Any, idf_weights: Any = None) -> None:
        self.lookup.set_vocabulary(vocabulary, idf_weights)

    # -- running -------------------------------------------------------------------------------
    def forward(self, x) -> Tensor:
        self._require_adapted()
        texts, single = self._documents(x)
        documents = [self.tokenize(t) for t in texts]
        flat = np.array([t for d in documents for t in d], dtype=object)
        ids = self.lookup.lookup(flat)
        bounds = np.cumsum([0] + [len(d) for d in documents])
        if self.output_mode == "int":
            length = self.output_sequence_length or max([len(d) for d in documents], default=0)
            out = np.zeros((len(documents), length), dtype=np.int64)
            for row, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
                kept = ids[start:min(end, start + length)]
                out[row, :len(kept)] = kept
        else:
            depth = self.lookup.depth()
            mode = "count" if self.output_mode == "tf_idf" else self.output_mode
            rows = np.repeat(np.arange(len(documents)), np.diff(bounds))
            counts = np.zeros((len(documents), depth))
            np.add.at(counts, (rows, ids), 1.0)
            out = (counts > 0).astype(np.float64) if mode == "multi_hot" else counts
            if self.output_mode == "tf_idf":
                idf = np.zeros(depth)
                idf[:len(self.lookup.idf_weights)] = self.lookup.idf_weights
                out = out * idf
            out = out.astype(backend.get_default_dtype())
        return Tensor(out[0] if single else out)

    def compute_output_shape(self, input_shape):
        batch = tuple(input_shape)[:1] or (None,)
        if self.output_mode == "int":
            return (*batch, self.output_sequence_length)
        return (*batch, self.lookup.depth())

    def get_config(self) -> dict:
        if callable(self.standardize) or callable(self.split):
            raise ValueError(f"{self._label()}.get_config: a callable standardize or split cannot be stored in "
                             "a config; use the built-in options to save the layer")
        lookup = self.lookup.get_config()
        return {"max_tokens": lookup["max_tokens"], "standardize": self.standardize, "split": self.split,
                "ngrams": list(self.ngrams) if isinstance(self.ngrams, tuple) else self.ngrams,
                "output_mode": self.output_mode, "output_sequence_length": self.output_sequence_length,
                "pad_to_max_tokens": lookup["pad_to_max_tokens"], "vocabulary": lookup["vocabulary"],
                "idf_weights": lookup["idf_weights"], "sparse": self.sparse, "name": self.name}

    def extra_repr(self) -> str:
        return self.lookup.extra_repr()
