"""RETRO's retrieval (Borgeaud et al., 2022): chunking, the database of (neighbour,
continuation) chunk pairs keyed by a frozen encoder's mean embedding, exact k-nearest-neighbour
search with exclusion of the querying document, and greedy generation that retrieves every m
tokens.

A database entry is a chunk N = x_{um+1 .. um+m} of a document and its continuation
F = x_{(u+1)m+1 .. (u+1)m+m} (padding past the document's end), keyed by
Bert(N) = (1/m) sum_j e_j, the mean of the frozen encoder's token embeddings. The neighbours
of a chunk C are the k entries of smallest ||Bert(C) - Bert(N)||^2, each given to the model
as the r = 2m tokens [N, F]; entries of the querying sequence's own document are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.id_inputs import token_ids
from lamina.models.retro import RETRO
from lamina.nn.layer import positive_int

__all__ = ["RetroDatabase", "retro_generate", "split_chunks"]


def split_chunks(ids, chunk_size: int) -> np.ndarray:
    """Token ids (N, T) -> the complete chunks (N, T // m, m), m = ``chunk_size``; the T mod m
    trailing tokens (an incomplete chunk) are left out."""
    ids = token_ids(ids, "split_chunks")
    m = positive_int(chunk_size, "split_chunks: chunk_size")
    n, t = ids.shape
    return ids[:, :t // m * m].reshape(n, t // m, m)


def _array(x) -> np.ndarray:
    return backend.to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)


class RetroDatabase:
    """Chunk pairs (``neighbours`` (M, m), ``continuations`` (M, m)), their ``documents``
    (M,) and ``keys`` (M, d): the mean over a chunk's tokens of ``encoder``'s output, a
    frozen model or any callable mapping ids (B, m) to embeddings (B, m, d) (a lamina
    :class:`~lamina.models.BERT`'s last hidden states) or (B, d), run without gradients.
    Continuations past a document's end hold ``pad_token_id``."""

    def __init__(self, encoder: Callable, chunk_size: int, pad_token_id: int = 0, batch_size: int = 256):
        if not callable(encoder):
            raise TypeError(f"RetroDatabase: encoder must be callable, got {type(encoder).__name__}")
        self.encoder = encoder
        self.chunk_size = positive_int(chunk_size, "RetroDatabase: chunk_size")
        self.pad_token_id = int(pad_token_id)
        self.batch_size = positive_int(batch_size, "RetroDatabase: batch_size")
        m = self.chunk_size
        self.neighbours = np.zeros((0, m), dtype=np.int64)
        self.continuations = np.zeros((0, m), dtype=np.int64)
        self.documents = np.zeros((0,), dtype=np.int64)
        self.keys = np.zeros((0, 0))

    def __len__(self) -> int:
        return len(self.neighbours)

    def embed(self, chunks) -> np.ndarray:
        """Bert(C): the mean embedding (B, d) of chunks (B, m), in float64."""
        chunks = token_ids(chunks, "RetroDatabase.embed")
        parts = []
        with no_grad():
            for start in range(0, len(chunks), self.batch_size):
                out = _array(self.encoder(chunks[start:start + self.batch_size])).astype(np.float64)
                parts.append(out.mean(axis=1) if out.ndim == 3 else out)
        if not parts or parts[0].ndim != 2:
            raise ShapeError(f"RetroDatabase.embed: the encoder must map ids (B, {self.chunk_size}) to (B, m, d) or "
                             f"(B, d); got {None if not parts else parts[0].shape} for chunks {chunks.shape}")
        return np.concatenate(parts)

    def add(self, ids, documents=None) -> None:
        """Add the chunks of documents ``ids`` (N, T) (row i is document ``documents[i]``,
        default len(index) + i), each with its continuation."""
        chunks = split_chunks(ids, self.chunk_size)
        n, count, m = chunks.shape
        if count == 0:
            raise ShapeError(f"RetroDatabase.add: documents of shape {np.shape(ids)} are shorter than one chunk "
                             f"of {m} tokens")
        documents = np.arange(len(self), len(self) + n) if documents is None else np.asarray(documents)
        if documents.shape != (n,):
            raise ShapeError(f"RetroDatabase.add: expected one document id per row, ({n},), got {documents.shape}")
        following = np.concatenate([chunks[:, 1:], np.full((n, 1, m), self.pad_token_id)], axis=1)
        keys = self.embed(chunks.reshape(-1, m))
        self.keys = keys if not len(self) else np.concatenate([self.keys, keys])
        self.neighbours = np.concatenate([self.neighbours, chunks.reshape(-1, m)])
        self.continuations = np.concatenate([self.continuations, following.reshape(-1, m)])
        self.documents = np.concatenate([self.documents, np.repeat(documents, count)])

    def search(self, chunks, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, squared distances), each (B, k), of the k entries nearest each of
        ``chunks`` (B, m), nearest first (ties by index); ``exclude`` (B,): a document per
        chunk whose entries it may not retrieve."""
        k = positive_int(k, "RetroDatabase.search: k")
        queries = self.embed(chunks)
        candidates = np.broadcast_to(self.documents, (len(queries), len(self)))
        allowed = np.ones(candidates.shape, dtype=bool)
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.shape != (len(queries),):
                raise ShapeError(f"RetroDatabase.search: exclude must hold one document per chunk, "
                                 f"({len(queries)},), got {exclude.shape}")
            allowed = candidates != exclude[:, None]
        if k > allowed.sum(axis=1).min(initial=len(self)):
            raise ValueError(f"RetroDatabase.search: k={k} exceeds the {allowed.sum(axis=1).min()} entries a "
                             f"chunk may retrieve from the {len(self)} of the database")
        distances = ((queries ** 2).sum(1)[:, None] - 2.0 * queries @ self.keys.T + (self.keys ** 2).sum(1))
        distances = np.where(allowed, np.maximum(distances, 0.0), np.inf)
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(nearest, np.lexsort((nearest, np.take_along_axis(distances, nearest, 1)), axis=1), 1)
        return order, np.take_along_axis(distances, order, 1)

    def retrieve(self, ids, k: int, exclude=None) -> np.ndarray:
        """RET(C_u) for the complete chunks of ``ids`` (N, T): neighbour ids (N, T // m, k, 2m),
        each [neighbour chunk, continuation]; ``exclude`` (N,): each sequence's own document."""
        chunks = split_chunks(ids, self.chunk_size)
        n, count, m = chunks.shape
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.shape != (n,):
                raise ShapeError(f"RetroDatabase.retrieve: exclude must hold one document per sequence, ({n},), "
                                 f"got {exclude.shape}")
            exclude = np.repeat(exclude, count)
        if count == 0:
            return np.zeros((n, 0, k, 2 * m), dtype=np.int64)
        found, _ = self.search(chunks.reshape(-1, m), k, exclude)
        pairs = np.concatenate([self.neighbours[found], self.continuations[found]], axis=-1)
        return pairs.reshape(n, count, k, 2 * m)


def retro_generate(model: RETRO, database: RetroDatabase, prompt_ids, max_new_tokens: int, k: int = 2,
                   exclude=None) -> np.ndarray:
    """Greedy decoding without a cache: each step runs the whole sequence and appends the
    argmax; the neighbours of a chunk are retrieved once, when its m-th token is there.
    Returns the ids (N, T + ``max_new_tokens``)."""
    if database.chunk_size != model.chunk_size:
        raise ValueError(f"retro_generate: the database's chunk_size {database.chunk_size} differs from the "
                         f"model's {model.chunk_size}")
    ids = token_ids(prompt_ids, "retro_generate")
    m = model.chunk_size
    found = database.retrieve(ids, k, exclude)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                if found.shape[1] < ids.shape[1] // m:
                    newest = ids[:, found.shape[1] * m:(found.shape[1] + 1) * m]
                    found = np.concatenate([found, database.retrieve(newest, k, exclude)], axis=1)
                scores = _array(model(ids, found if found.shape[1] else None))[:, -1]
                ids = np.concatenate([ids, scores.argmax(-1)[:, None].astype(ids.dtype)], axis=1)
    finally:
        model.train(was_training)
    return ids
