"""WordPiece tokenization as BERT's (Hugging Face's ``BertTokenizer``), and a WordPiece trainer.

Tokenizing a text takes two passes:

1. basic tokenization: the text in Unicode NFC form, control characters dropped, whitespace normalized, every CJK
   ideograph made a word of its own, then, per whitespace-separated word, lower-casing and
   accent stripping (Unicode NFD, combining marks removed; ``lower_case=True``) and a split
   before and after every punctuation character;
2. WordPiece: each word becomes the longest vocabulary entry that starts it, then the
   longest "##"-prefixed entry that continues it, and so on (greedy longest match first);
   a word that cannot be covered, or longer than ``max_word_length`` characters, becomes
   the single [UNK] token.

"unaffable" with the entries "un", "##aff" and "##able" gives ``un ##aff ##able``.

Training (:meth:`WordPieceTokenizer.train`) starts from the characters: the first
character of each word and "##" plus each later one. It then repeatedly merges the adjacent
pair (a, b) of largest score count(ab) / (count(a) count(b)) over the training words, adding
a + b (b without its "##") to the vocabulary, until ``vocab_size`` entries: pairs of
pieces seen together more often than their frequencies predict join first.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from lamina.io.atomic import write_bytes_atomic

__all__ = ["WordPieceTokenizer", "basic_tokenize"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"
_CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
              (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _is_punctuation(char: str) -> bool:
    """ASCII symbols (all of !"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~) and Unicode punctuation (P*)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    """A CJK unified ideograph (the blocks BERT treats as words of one character)."""
    cp = ord(char)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _clean(text: str) -> str:
    """Drop NUL, U+FFFD and control characters; spaces for whitespace; spaces around CJK ideographs."""
    out = []
    for char in text:
        if char in ("\x00", "\ufffd") or _is_control(char):
            continue
        if _is_whitespace(char):
            out.append(" ")
        elif _is_cjk(char):
            out.append(f" {char} ")
        else:
            out.append(char)
    return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in word:
        if _is_punctuation(char):
            pieces.extend([current, char] if current else [char])
            current = ""
        else:
            current += char
    return pieces + ([current] if current else [])


def basic_tokenize(text: str, lower_case: bool = True, never_split: Iterable[str] = ()) -> list[str]:
    """BERT's basic tokenization (pass 1 of the module docstring): words and punctuation
    marks. The strings of ``never_split`` (special tokens) are cut out of the text wherever
    they stand and kept as they are."""
    keep = sorted(set(never_split), key=len, reverse=True)
    text = unicodedata.normalize("NFC", text)
    parts = re.split("(" + "|".join(map(re.escape, keep)) + ")", text) if keep else [text]
    words = []
    for k, part in enumerate(parts):
        if k % 2:                       # a special token
            words.append(part)
            continue
        for word in _clean(part).split():
            if lower_case:
                word = _strip_accents(word.lower())
            words.extend(_split_punctuation(word))
    return words


class WordPieceTokenizer:
    """BERT's tokenizer over a vocabulary ``vocab`` (tokens in id order, or a path to a
    vocab.txt of one token per line). The special tokens [PAD], [UNK], [CLS], [SEP] and
    [MASK] (names changeable through ``special``) must be in it.

    * :meth:`tokenize` (text -> pieces), :meth:`encode` (text, or a pair of texts, ->
      ``input_ids``, ``token_type_ids``, ``attention_mask``), :meth:`decode`;
    * :meth:`train` learns a vocabulary from texts; :meth:`save` writes a vocab.txt.
    """

    def __init__(self, vocab: Sequence[str] | str | os.PathLike, lower_case: bool = True,
                 max_word_length: int = 100, special: dict[str, str] | None = None):
        if isinstance(vocab, (str, os.PathLike)):
            with open(vocab, encoding="utf-8") as file:
                vocab = [line.rstrip("\r\n") for line in file]
            vocab = vocab[:-1] if vocab and vocab[-1] == "" else vocab
        tokens = list(vocab)
        self.token_to_id = {}
        for i, token in enumerate(tokens):
            self.token_to_id.setdefault(token, i)
        self.id_to_token = tokens
        self.lower_case = bool(lower_case)
        self.max_word_length = int(max_word_length)
        names = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", **(special or {})}
        missing = [token for token in names.values() if token not in self.token_to_id]
        if missing:
            raise ValueError(f"WordPieceTokenizer: the vocabulary of {len(tokens)} tokens lacks the special "
                             f"tokens {missing}")
        self.special = names
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.token_to_id[names[key]] for key in ("pad", "unk", "cls", "sep", "mask"))

    def __len__(self) -> int:
        return len(self.id_to_token)

    # -- tokenizing -------------------------------------------------------------------------
    def word_pieces(self, word: str) -> list[str]:
        """Greedy longest-match-first pieces of one word, or [UNK] when it cannot be covered
        or has more than ``max_word_length`` characters."""
        if len(word) > self.max_word_length:
            return [self.special["unk"]]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.token_to_id:
                    break
            else:
                return [self.special["unk"]]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (special tokens written in it are kept)."""
        never_split = set(self.special.values())
        return [piece for word in basic_tokenize(text, self.lower_case, never_split)
                for piece in ([word] if word in never_split else self.word_pieces(word))]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token_to_id.get(token, self.unk_id) for token in tokens]

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None, pad_to: int | None = None) -> dict[str, list[int]]:
        """``{'input_ids', 'token_type_ids', 'attention_mask'}`` of [CLS] text [SEP] (and
        text_pair [SEP], with token type 1), as BERT reads them. ``max_length`` truncates the
        longer text first, one token at a time, until the whole fits (ValueError if the
        special tokens alone do not); ``pad_to`` appends [PAD] (attention 0) up to that length."""
        first = self.convert_tokens_to_ids(self.tokenize(text))
        second = None if text_pair is None else self.convert_tokens_to_ids(self.tokenize(text_pair))
        extra = (2 if second is None else 3) if add_special_tokens else 0
        if max_length is not None:
            if max_length < extra:
                raise ValueError(f"WordPieceTokenizer.encode: max_length={max_length} leaves no room for the "
                                 f"{extra} special tokens")
            while len(first) + len(second or ()) + extra > max_length:
                longer = first if second is None or len(first) >= len(second) else second
                longer.pop()
        if add_special_tokens:
            ids = [self.cls_id, *first, self.sep_id]
            types = [0] * len(ids)
            if second is not None:
                ids += [*second, self.sep_id]
                types += [1] * (len(second) + 1)
        else:
            ids = first + (second or [])
            types = [0] * len(first) + [1] * len(second or ())
        mask = [1] * len(ids)
        if pad_to is not None:
            if pad_to < len(ids):
                raise ValueError(f"WordPieceTokenizer.encode: pad_to={pad_to} is shorter than the {len(ids)} "
                                 "tokens; pass max_length to truncate")
            padding = pad_to - len(ids)
            ids, types, mask = ids + [self.pad_id] * padding, types + [0] * padding, mask + [0] * padding
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}

    def encode_batch(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                     max_length: int | None = None) -> dict[str, np.ndarray]:
        """:meth:`encode` of every text (and pair), padded to the longest: arrays (N, T) of
        ``input_ids``, ``token_type_ids`` and ``attention_mask``, ready for
        :class:`lamina.models.BERT`."""
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"WordPieceTokenizer.encode_batch: {len(texts)} texts but {len(text_pairs)} text_pairs")
        pairs = [None] * len(texts) if text_pairs is None else list(text_pairs)
        rows = [self.encode(text, pair, max_length=max_length) for text, pair in zip(texts, pairs)]
        longest = max((len(row["input_ids"]) for row in rows), default=0)
        padded = [self.encode(text, pair, max_length=max_length, pad_to=longest) for text, pair in zip(texts, pairs)]
        return {key: np.asarray([row[key] for row in padded], dtype=np.int64).reshape(len(rows), longest)
                for key in ("input_ids", "token_type_ids", "attention_mask")}

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True, clean_up_spaces: bool = False) -> str:
        """The text of ``ids``: tokens joined by spaces, "##" continuations glued to the piece
        before. ``clean_up_spaces``: also remove the space before . , ! ? and English
        contractions ('s, n't...), as Hugging Face's ``clean_up_tokenization_spaces``. Case,
        accents and the original spacing are not restored."""
        specials = set(self.special.values())
        tokens = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.id_to_token):
                raise ValueError(f"WordPieceTokenizer.decode: id {i} is outside the vocabulary of "
                                 f"{len(self.id_to_token)} tokens")
            token = self.id_to_token[i]
            if not (skip_special_tokens and token in specials):
                tokens.append(token)
        text = " ".join(tokens).replace(" " + CONTINUATION, "")
        if clean_up_spaces:
            for spaced, joined in _CLEAN_UPS:
                text = text.replace(spaced, joined)
        return text

    # -- vocabulary -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as a vocab.txt (one token per line, in id order), atomically."""
        write_bytes_atomic(path, "".join(token + "\n" for token in self.id_to_token).encode("utf-8"))

    def __call__(self, text, text_pair=None, **options):
        """Hugging Face-style call (padding, truncation, offsets...; the options of
        :meth:`HFTokenizer.__call__ <lamina.text.HFTokenizer.__call__>`) through this tokenizer's
        tokenizer.json."""
        from lamina.text.hf_convert import call_as_hf

        return call_as_hf(self, text, text_pair, **options)

    def to_hf_json(self) -> str:
        """This tokenizer as the text of a Hugging Face ``tokenizer.json`` (see
        :mod:`lamina.text.hf_convert`), which :class:`~lamina.text.HFTokenizer` reads."""
        import json

        from lamina.text.hf_convert import wordpiece_tokenizer_json

        return json.dumps(wordpiece_tokenizer_json(self), ensure_ascii=False)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lower_case: bool = True,
              special_tokens: Sequence[str] = SPECIAL_TOKENS) -> WordPieceTokenizer:
        """Learn a vocabulary of at most ``vocab_size`` tokens from ``texts`` by WordPiece's
        likelihood-scored merges (see the module docstring): the special tokens, the
        alphabet, then merged pieces in the order learned. Stops early when no pair is left."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"WordPieceTokenizer.train: vocab_size must be a positive int, got {vocab_size!r}")
        specials = list(special_tokens)
        word_counts = Counter(word for text in texts
                              for word in basic_tokenize(text, lower_case, specials) if word not in specials)
        splits = {word: [word[0]] + [CONTINUATION + c for c in word[1:]] for word in word_counts}
        vocab = list(specials)
        for pieces in splits.values():
            vocab.extend(piece for piece in pieces if piece not in vocab)
        if len(vocab) > vocab_size:
            raise ValueError(f"WordPieceTokenizer.train: vocab_size={vocab_size} is smaller than the "
                             f"{len(vocab)} special tokens and characters of the texts")
        while len(vocab) < vocab_size:
            best = _best_pair(splits, word_counts)
            if best is None:
                break
            merged = best[0] + best[1].removeprefix(CONTINUATION)
            for word, pieces in splits.items():
                splits[word] = _merge(pieces, best, merged)
            if merged not in vocab:
                vocab.append(merged)
        return cls(vocab, lower_case=lower_case)


def _best_pair(splits: dict[str, list[str]], word_counts: Counter) -> tuple[str, str] | None:
    """The adjacent pair of largest count(ab) / (count(a) count(b)) (ties: the first met)."""
    piece_counts: Counter = Counter()
    pair_counts: Counter = Counter()
    for word, pieces in splits.items():
        count = word_counts[word]
        for piece in pieces:
            piece_counts[piece] += count
        for pair in zip(pieces, pieces[1:]):
            pair_counts[pair] += count
    if not pair_counts:
        return None
    return max(pair_counts, key=lambda p: pair_counts[p] / (piece_counts[p[0]] * piece_counts[p[1]]))


def _merge(pieces: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out
