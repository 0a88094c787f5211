"""TrOCR (Li et al. 2021/2023, "TrOCR: Transformer-based Optical Character Recognition with
Pre-trained Models"): a ViT-style encoder over patches of a text-line image and an
autoregressive Transformer decoder that writes the text, trained with cross-entropy (no CTC).

A text line x (N, H, W, C), NHWC, of the configured height H and its own width W_n, goes through

    patches    a grid of (p_h, p_w) patches: R = H / p_h rows and C = ceil(W / p_w) columns (the
               columns past each line's width zeroed, the batch padded on the right to C p_w),
               each flattened and projected to D features by one Conv2D with kernel = stride =
               (p_h, p_w) (``patch_embed``), read row by row as R C tokens
    z_0 =      x_{r,c} E + E_pos[r, c]: a learned 2-D position table (R, C_max, D)
               (``pos_embedding``, C_max = ceil(max_width / p_w)) indexed by the patch's row and
               column, so that a column keeps its position whatever the batch's width
    z_l =      ``encoder_layers`` pre-norm encoder layers (multi-head self-attention and a GELU
               MLP, as ViT / DeiT) whose keys skip line n's padding columns c >= ceil(W_n / p_w)
    h =        LN(z_L) (``encoder_norm``), then a Dense D -> D_dec (``bridge``) when the decoder
               is narrower than the encoder
    e_t =      LN(sqrt(D_dec) E_tok[y_t] + P[t]) (``embed_tokens``, ``embed_positions``,
               ``embed_norm``), y_0 = </s>: the end token also starts the text, as in TrOCR's
               decoder
    g_t =      ``decoder_layers`` post-norm decoder layers: causal self-attention over e_<=t,
               cross-attention over h (its padding masked), a ReLU feed-forward network
    s_t =      g_t W_out (``output``, no bias; W_out = E_tok^T with ``tie_embeddings``), and
               p(y_{t+1} | y_<=t, x) = softmax(s_t)

The vocabulary holds K tokens (the characters of ``vocab``, ids 0 .. K - 1 in its order, or K
bare ids) and the end token </s> = K, so the decoder scores K + 1 classes. Training is teacher
forcing (:meth:`TrOCR.loss`): the decoder reads [</s>, y_1 .. y_S] and is scored against
[y_1 .. y_S, </s>], L = -(1 / M) sum_n sum_t log p(y_t | y_<t, x_n) over the M target tokens of
the batch. :meth:`TrOCR.recognize` decodes greedily (the batch at once, with the decoder's
key/value caches) or by beam search (:func:`lamina.text.beam_search`, one line at a time).

Patches: TrOCR resizes every line to 384 x 384 and cuts 16 x 16 patches with learned positions.
Here a line keeps its aspect ratio: its height is fixed, its width varies, and the grid's
learned 2-D positions follow the columns (p_h = H gives full-height patches, a 1-D sequence).

:func:`trocr_small` has TrOCR-Small's sizes (a DeiT-Small encoder: 16 x 16 patches, 12 layers of
width 384, 6 heads, MLPs of 1536; a decoder of 6 layers of width 256, 8 heads, feed-forward
1024, 512 positions; 64,044 output classes; untied output projection; 3-channel 384 x 384
images): 61,152,128 parameters. The published checkpoint has 61,448,064 (the paper: 62M): its
cross-attentions project the 384-wide encoder output to keys and values in every layer
(6 x 2 x (384 x 256 + 256)) where here one ``bridge`` does it once (-294,656), and it has a
class token and 514 decoder position rows (-768 - 512).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import pair, positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import PositionEmbedding, TransformerEncoderLayer
from lamina.nn.transformer_decoder import TransformerDecoderLayer
from lamina.text.beam import Hypothesis, beam_search
from lamina.text.generate import caching_layers

__all__ = ["TrOCR", "trocr_small"]

ENCODER_EPS = 1e-12      # DeiT's LayerNorm eps
INIT_STD = 0.02          # positions and token embeddings start N(0, 0.02^2)
IGNORE = -1              # the target of a padding step


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@register_with_arguments
class TrOCR(Module):
    """The TrOCR text recogniser (module docstring).

    ``vocab``: the characters (a string, each once; texts are then strings) or their number K
    (texts are then sequences of ids in [0, K)). ``image_height`` H and ``in_channels``: every
    line's; ``patch``: (p_h, p_w) (an int for a square), p_h dividing H; ``max_width``: the
    widest line (its columns size the position table). Encoder: ``encoder_layers`` of width
    ``dim`` with ``heads`` heads and MLPs of ``mlp_dim`` (4 dim). Decoder: ``decoder_layers`` of
    width ``decoder_dim`` (dim) with ``decoder_heads`` (heads) heads and feed-forward networks of
    ``decoder_ffn_dim`` (4 decoder_dim), ``max_length`` positions (the longest text, </s>
    included); ``dropout`` in the decoder in training; ``tie_embeddings``: the output projection
    is the transposed token table. ``position_std``: both position tables start N(0, std^2)
    (0.02, as TrOCR's pre-trained parts; a small model trained from scratch finds the
    characters' places sooner from 0.5)."""

    def __init__(self, vocab: str | int, image_height: int, patch=(16, 16), dim: int = 384, encoder_layers: int = 12,
                 decoder_layers: int = 6, heads: int = 6, decoder_dim: int | None = None,
                 decoder_heads: int | None = None, mlp_dim: int | None = None, decoder_ffn_dim: int | None = None,
                 in_channels: int = 1, max_width: int = 384, max_length: int = 512, dropout: float = 0.0,
                 tie_embeddings: bool = False, position_std: float = INIT_STD, name: str | None = None):
        super().__init__(name=name)
        who = "TrOCR"
        if isinstance(vocab, str):
            if not vocab or len(set(vocab)) != len(vocab):
                raise ValueError(f"{who}: vocab must hold each character once and at least one, got {vocab!r}")
            self.charset, size = vocab, len(vocab)
        else:
            self.charset, size = None, positive_int(vocab, f"{who}: vocab")
        self.end_id, self.vocab_size = size, size + 1
        self._ids = None if self.charset is None else {c: i for i, c in enumerate(self.charset)}
        for what, value in (("image_height", image_height), ("dim", dim), ("encoder_layers", encoder_layers),
                            ("decoder_layers", decoder_layers), ("heads", heads), ("in_channels", in_channels),
                            ("max_width", max_width), ("max_length", max_length)):
            positive_int(value, f"{who}: {what}")
        self.patch = pair(patch, f"{who}: patch")
        ph, pw = self.patch
        if min(self.patch) < 1 or image_height % ph:
            raise ValueError(f"{who}: patch {self.patch} must be positive with a height dividing image_height "
                             f"{image_height}")
        self.image_height, self.in_channels, self.dim = image_height, in_channels, dim
        self.rows, self.max_columns = image_height // ph, -(-max_width // pw)
        self.max_width, self.max_length = max_width, max_length
        self.decoder_dim = dim if decoder_dim is None else positive_int(decoder_dim, f"{who}: decoder_dim")
        decoder_heads = heads if decoder_heads is None else decoder_heads
        mlp_dim = 4 * dim if mlp_dim is None else mlp_dim
        decoder_ffn_dim = 4 * self.decoder_dim if decoder_ffn_dim is None else decoder_ffn_dim
        self.tie_embeddings = bool(tie_embeddings)
        if not position_std > 0:
            raise ValueError(f"{who}: position_std must be positive, got {position_std!r}")
        self.position_std = float(position_std)
        self.patch_embed = Conv2D(dim, self.patch, stride=self.patch)
        self.encoder = ModuleList([
            TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation="gelu", norm_first=True,
                                    layer_norm_eps=ENCODER_EPS) for _ in range(encoder_layers)])
        self.encoder_norm = LayerNorm(-1, eps=ENCODER_EPS)
        self.bridge = Dense(self.decoder_dim) if self.decoder_dim != dim else None
        normal = {"name": "normal", "std": INIT_STD}
        self.embed_tokens = Embedding(self.vocab_size, self.decoder_dim, embeddings_init=normal)
        self.embed_positions = PositionEmbedding(max_length, embeddings_init={"name": "normal",
                                                                              "std": self.position_std})
        self.embed_norm = LayerNorm(-1)
        self.embed_dropout = Dropout(dropout)
        self.decoder = ModuleList([
            TransformerDecoderLayer(self.decoder_dim, decoder_heads, decoder_ffn_dim, dropout=dropout,
                                    activation="relu") for _ in range(decoder_layers)])
        self.output = None if self.tie_embeddings else Dense(self.vocab_size, use_bias=False,
                                                             kernel_init="xavier_uniform")
        self._build()

    def _build(self) -> None:
        """Every weight now, so that ``parameters()`` is complete before the first call."""
        d, dd = (None, None, self.dim), (None, None, self.decoder_dim)
        shapes = [(self.patch_embed, (None, self.image_height, None, self.in_channels)), (self.encoder_norm, d),
                  *[(layer, d) for layer in self.encoder], (self.embed_tokens, None),
                  (self.embed_positions, (None, self.max_length, self.decoder_dim)), (self.embed_norm, dd),
                  *[(layer, dd) for layer in self.decoder]]
        shapes += [(layer, shape) for layer, shape in ((self.bridge, d), (self.output, dd)) if layer is not None]
        for layer, shape in shapes:
            layer.build(shape)
            layer.built, layer.build_input_shape = True, shape
        table = (self.rows, self.max_columns, self.dim)
        self.add_parameter("pos_embedding", initializers.normal(self.position_std)(table, self.dim, self.dim,
                                                                                   backend.get_default_dtype()))
        self.built = True

    # -- checks ------------------------------------------------------------------------------
    def _checked(self, images, widths) -> tuple[Tensor, np.ndarray]:
        x = as_tensor(images)
        if x.ndim != 4 or x.shape[1] != self.image_height or x.shape[3] != self.in_channels:
            raise ShapeError(f"TrOCR: expected NHWC lines (batch, height={self.image_height}, width, "
                             f"channels={self.in_channels}), got shape {tuple(x.shape)}")
        if widths is None:
            widths = np.full(x.shape[0], x.shape[2], dtype=np.int64)
        widths = np.asarray(widths)
        if widths.shape != (x.shape[0],) or widths.dtype.kind not in "iu":
            raise ShapeError(f"TrOCR: widths must be integers (batch,) = ({x.shape[0]},), got shape {widths.shape} "
                             f"and dtype {widths.dtype}")
        bad = (widths < 1) | (widths > min(x.shape[2], self.max_width))
        if bad.any():
            n = int(np.argmax(bad))
            raise ValueError(f"TrOCR: line {n} has width {int(widths[n])}; widths must lie in [1, "
                             f"{min(x.shape[2], self.max_width)}] (the batch's width {x.shape[2]}, the model's "
                             f"max_width {self.max_width})")
        return x, widths.astype(np.int64)

    def text_ids(self, texts: Sequence) -> list[list[int]]:
        """The token ids of each text (a string with a charset, else a sequence of ids in
        [0, K)); unknown characters or ids raise ValueError."""
        rows = []
        for n, text in enumerate(texts):
            if self._ids is not None:
                unknown = sorted(set(str(text)) - set(self._ids)) if isinstance(text, str) else [text]
                if unknown:
                    raise ValueError(f"TrOCR: text {n} ({text!r}) holds characters {unknown} that are not in the "
                                     f"vocabulary {self.charset!r}")
                rows.append([self._ids[c] for c in text])
                continue
            ids = [int(i) for i in text]
            if any(not 0 <= i < self.end_id for i in ids):
                raise ValueError(f"TrOCR: text {n} holds ids {ids} outside [0, {self.end_id}), the vocabulary of "
                                 f"{self.end_id} tokens")
            rows.append(ids)
        return rows

    def ids_to_text(self, ids: Sequence[int]) -> str | list[int]:
        """The text of token ids, </s> dropped: a string with a charset, else the ids."""
        ids = [int(i) for i in ids if i != self.end_id]
        return ids if self.charset is None else "".join(self.charset[i] for i in ids)

    # -- the network ---------------------------------------------------------------------------
    def encode(self, images, widths=None) -> tuple[Tensor, np.ndarray]:
        """(h, padding): the encoder's output (N, R C, decoder_dim) for the lines (N, H, W,
        in_channels) of ``widths`` (default: all W), and the (N, R C) mask of the padding tokens
        (True: padding, as the decoder layers' ``memory_key_padding_mask``)."""
        x, widths = self._checked(images, widths)
        pw = self.patch[1]
        columns = -(-int(widths.max()) // pw)
        own = -(-widths // pw)
        width = min(x.shape[2], columns * pw)
        x = F.getitem(x, (slice(None), slice(None), slice(0, width)))
        if (widths < width).any():
            keep = np.arange(width)[None, None, :, None] < widths[:, None, None, None]
            x = x * keep.astype(x.dtype)
        if width < columns * pw:
            x = F.pad(x, ((0, 0), (0, 0), (0, columns * pw - width), (0, 0)))
        tokens = F.add(self.patch_embed(x), F.getitem(self.pos_embedding, (slice(None), slice(0, columns))))
        z = F.reshape(tokens, (x.shape[0], self.rows * columns, self.dim))
        valid = np.broadcast_to(np.arange(columns)[None, None, :] < own[:, None, None],
                                (x.shape[0], self.rows, columns)).reshape(x.shape[0], -1)
        key_mask = None if valid.all() else valid
        for layer in self.encoder:
            z = layer(z, key_mask=key_mask)
        z = self.encoder_norm(z)
        if self.bridge is not None:
            z = self.bridge(z)
        return z, ~valid

    def decode(self, memory, padding, tokens, positions=None) -> Tensor:
        """The scores (N, T, K + 1) of the next token after each of ``tokens`` (N, T) (the
        decoder's input, starting with </s>) given the encoder's ``memory`` and its ``padding``
        mask (or None); ``positions`` (N, T): the tokens' positions (default 0 .. T - 1)."""
        tokens = np.asarray(tokens.numpy() if isinstance(tokens, Tensor) else tokens)
        if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
            raise ShapeError(f"TrOCR.decode: tokens must be integer ids (batch, steps), got {tokens.dtype} of "
                             f"shape {tokens.shape}")
        if positions is None:
            positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
        e = F.mul(self.embed_tokens(tokens), math.sqrt(self.decoder_dim))
        g = self.embed_dropout(self.embed_norm(self.embed_positions(e, positions=positions)))
        mask = None if padding is None or not np.any(padding) else padding
        for layer in self.decoder:
            g = layer(g, memory, memory_key_padding_mask=mask, tgt_is_causal=True)
        if self.output is None:
            return F.matmul(g, F.transpose(self.embed_tokens.weight))
        return self.output(g)

    def forward(self, images, widths, tokens) -> Tensor:
        """Teacher-forced scores (N, T, K + 1) of the lines (``widths`` or None for all full)
        and the decoder's input ``tokens`` (N, T): s_t scores the token after tokens[:, t]."""
        memory, padding = self.encode(images, widths)
        return self.decode(memory, padding, tokens)

    def teacher_forcing(self, texts: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of the texts, each (N, S + 1) for the longest text's S tokens:
        inputs [</s>, y_1 .. y_S] (padded with </s>), targets [y_1 .. y_S, </s>] (padded with -1,
        which the loss ignores)."""
        rows = self.text_ids(texts)
        steps = max(len(r) for r in rows) + 1
        if steps > self.max_length:
            raise ValueError(f"TrOCR: a text of {steps - 1} tokens needs {steps} positions, more than max_length="
                             f"{self.max_length}")
        inputs = np.full((len(rows), steps), self.end_id, dtype=np.int64)
        targets = np.full((len(rows), steps), IGNORE, dtype=np.int64)
        for n, ids in enumerate(rows):
            inputs[n, 1:len(ids) + 1] = ids
            targets[n, :len(ids) + 1] = [*ids, self.end_id]
        return inputs, targets

    def loss(self, images, widths, texts: Sequence, reduction: str = "mean") -> Tensor:
        """The cross-entropy of the texts (plus </s>) under teacher forcing, averaged over
        their tokens ('mean'), summed ('sum') or per token ('none', (N, S + 1), 0 on padding)."""
        if len(texts) != as_tensor(images).shape[0]:
            raise ShapeError(f"TrOCR.loss: got {len(texts)} texts for {as_tensor(images).shape[0]} lines")
        inputs, targets = self.teacher_forcing(texts)
        scores = self(images, widths, inputs)
        return F.categorical_cross_entropy(scores, targets, from_logits=True, reduction=reduction,
                                           ignore_index=IGNORE)

    # -- recognition ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _caching(self) -> Iterator[None]:
        with caching_layers(self.decoder):
            yield

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield
        finally:
            self.train(was_training)

    def _steps(self, max_length: int | None) -> int:
        if max_length is None:
            return self.max_length
        positive_int(max_length, "TrOCR: max_length")
        if max_length > self.max_length:
            raise ValueError(f"TrOCR: max_length {max_length} is more than the model's {self.max_length} positions")
        return max_length

    def recognize(self, images, widths=None, beam_size: int = 1, max_length: int | None = None,
                  length_penalty: float = 0.0) -> list:
        """The text of each line (strings with a charset, else lists of ids): greedy decoding
        for ``beam_size`` 1, else beam search (see :meth:`beam_search`); at most ``max_length``
        tokens (</s> included; default the model's positions)."""
        positive_int(beam_size, "TrOCR: beam_size")
        if beam_size > 1:
            return [self.ids_to_text(h.ids) for h in self.beam_search(images, widths, beam_size, max_length,
                                                                 length_penalty)]
        steps = self._steps(max_length)
        with self._evaluating():
            memory, padding = self.encode(images, widths)
            n = memory.shape[0]
            token = np.full((n, 1), self.end_id, dtype=np.int64)
            done = np.zeros(n, dtype=bool)
            chosen = []
            with self._caching():
                for t in range(steps):
                    scores = self.decode(memory, padding, token, np.full((n, 1), t)).numpy()[:, -1]
                    token = np.where(done, self.end_id, scores.argmax(axis=-1))[:, None]
                    chosen.append(token[:, 0])
                    done |= token[:, 0] == self.end_id
                    if done.all():
                        break
        ids = np.stack(chosen, axis=1)
        return [self.ids_to_text(row[:int(np.argmax(row == self.end_id))] if (row == self.end_id).any() else row)
                for row in ids]

    def beam_search(self, images, widths=None, beam_size: int = 4, max_length: int | None = None,
                    length_penalty: float = 0.0) -> list[Hypothesis]:
        """The best :class:`lamina.text.Hypothesis` of each line (ids ending with </s> when it
        ended, its log-probability and score) by beam search of width ``beam_size``, the
        hypotheses of a line run as one batch through the decoder's key/value caches. A
        width of 1 is greedy decoding."""
        positive_int(beam_size, "TrOCR: beam_size")
        steps = self._steps(max_length)
        best = []
        with self._evaluating():
            memory, padding = self.encode(images, widths)
            for n in range(memory.shape[0]):
                line = memory.numpy()[n:n + 1, ~padding[n]]       # the line's own tokens: no mask needed

                def step(last, state):
                    t, rows = state
                    scores = self.decode(tensor(rows), None, last[:, None], np.full((len(last), 1), t)).numpy()
                    return _log_softmax(scores[:, -1]), (t + 1, rows)

                def select(state, keep):
                    for layer in self.decoder:
                        layer.reorder_cache(keep)
                    return state[0], state[1][keep]

                with self._caching():
                    best.append(beam_search(step, (0, line), self.end_id, self.end_id, beam_size, steps,
                                            length_penalty, select=select)[0])
        return best


def trocr_small(vocab: str | int = 64043, image_height: int = 384, in_channels: int = 3, max_width: int = 384,
                **options) -> TrOCR:
    """TrOCR-Small's sizes (module docstring): a DeiT-Small encoder (16 x 16 patches, 12 layers of
    width 384, 6 heads, MLPs of 1536) and a decoder of 6 layers of width 256 with 8 heads,
    feed-forward networks of 1024 and 512 positions, an untied output projection and dropout
    0.1; the default vocabulary (64,043 tokens and </s>) gives the published 64,044 classes and
    61,152,128 parameters (the published model 61.4M, see the module docstring). ``options``
    override :class:`TrOCR`'s arguments."""
    sizes = {"patch": (16, 16), "dim": 384, "encoder_layers": 12, "heads": 6, "mlp_dim": 1536, "decoder_dim": 256,
             "decoder_layers": 6, "decoder_heads": 8, "decoder_ffn_dim": 1024, "max_length": 512, "dropout": 0.1}
    return TrOCR(vocab, image_height, in_channels=in_channels, max_width=max_width, **{**sizes, **options})
