"""Post-processors of ``tokenizer.json`` files: the encodings of a text (and of a pair) -> one
encoding with the special tokens a model expects, and the token type (segment) of each token.

* TemplateProcessing: ``single`` and ``pair`` are lists of pieces, ``$A``/``$B`` the texts and
  named special tokens (each one or more ids), each piece with its type id;
  "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1" is BERT's pair template.
* BertProcessing: [CLS] A [SEP] (B [SEP]), types 0 then 1.
* RobertaProcessing: <s> A </s> (</s> B </s>), types 0 then 1.
* ByteLevel: nothing to add; with ``trim_offsets`` (also RobertaProcessing's) the offsets of each
  token leave out its leading and trailing spaces (:func:`trim_offsets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.text.hf_normalizers import component_class, require

__all__ = ["Encoding", "PostProcessor", "post_processor_from_json", "trim_offsets"]

_SPACES = "\u0120" + "".join(chr(code) for code in range(0x3001) if chr(code).isspace())   # 'Ġ': a byte-level space


@dataclass
class Encoding:
    """One encoded text (or pair): per token its id, string, token type id, 1 if special, 1 if
    real (0 for padding), its ``offsets`` (start, end) in its own input text ((0, 0) for special
    tokens), its word index (``word_ids``: the pre-tokenized word, None for tokens the
    post-processor or padding added) and its ``sequence_ids`` (0: the text, 1: the pair, None
    for added special tokens and padding). A truncated encoding keeps the windows of tokens that
    did not fit in ``overflowing``, each an encoding of its own (see :mod:`lamina.text.hf_truncation`)."""

    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    type_ids: list[int] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    attention_mask: list[int] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    word_ids: list[int | None] = field(default_factory=list)
    sequence_ids: list[int | None] = field(default_factory=list)
    overflowing: list[Encoding] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, token_id: int, token: str, type_id: int = 0, special: bool = False,
               offset: tuple[int, int] = (0, 0), word: int | None = None, sequence: int | None = None,
               attention: int = 1) -> None:
        self.ids.append(token_id)
        self.tokens.append(token)
        self.type_ids.append(type_id)
        self.special_tokens_mask.append(int(special))
        self.attention_mask.append(attention)
        self.offsets.append(offset)
        self.word_ids.append(word)
        self.sequence_ids.append(sequence)

    def extend(self, other: Encoding, type_id: int | None = None, sequence: int | None = None) -> None:
        """``other``'s tokens appended, with ``type_id`` (None: their own) and, where
        ``sequence`` is given, that sequence index for the tokens that have one."""
        self.ids += other.ids
        self.tokens += other.tokens
        self.type_ids += other.type_ids if type_id is None else [type_id] * len(other)
        self.special_tokens_mask += other.special_tokens_mask
        self.attention_mask += other.attention_mask
        self.offsets += other.offsets
        self.word_ids += other.word_ids
        self.sequence_ids += other.sequence_ids if sequence is None else [
            None if s is None else sequence for s in other.sequence_ids]

    def truncated(self, length: int, from_left: bool = False) -> Encoding:
        keep = slice(len(self) - length, None) if from_left else slice(0, length)
        return Encoding(*(getattr(self, name)[keep] for name in _COLUMNS))

    def sliced(self, start: int, end: int) -> Encoding:
        """The tokens ``[start, end)`` (without overflowing windows)."""
        return Encoding(*(getattr(self, name)[start:end] for name in _COLUMNS))

    def padded(self, length: int, pad_id: int, pad_token: str, pad_type_id: int = 0, left: bool = False) -> Encoding:
        """Padding tokens (attention 0, special, no word or sequence) added up to ``length``, to the
        overflowing windows as well."""
        windows = [window.padded(length, pad_id, pad_token, pad_type_id, left)
                   for window in self.overflowing] if self.overflowing else []
        missing = length - len(self)
        if missing <= 0 and not windows:
            return self
        pad = Encoding()
        for _ in range(missing):
            pad.append(pad_id, pad_token, pad_type_id, special=True, attention=0)
        out = Encoding()
        for part in (pad, self) if left else (self, pad):
            out.extend(part)
        out.overflowing = windows
        return out

    # -- alignment queries (as the ``tokenizers`` Encoding) -----------------------------------
    @property
    def n_sequences(self) -> int:
        return len({s for s in self.sequence_ids if s is not None})

    def token_to_sequence(self, token_index: int) -> int | None:
        return self.sequence_ids[token_index]

    def token_to_word(self, token_index: int) -> int | None:
        return self.word_ids[token_index]

    def token_to_chars(self, token_index: int) -> tuple[int, int] | None:
        """The (start, end) characters of its own text the token covers; None for special tokens."""
        if self.sequence_ids[token_index] is None:
            return None
        return self.offsets[token_index]

    def char_to_token(self, char_index: int, sequence_index: int = 0) -> int | None:
        """The first token of sequence ``sequence_index`` whose span holds the character ``char_index``."""
        for k, ((start, end), sequence) in enumerate(zip(self.offsets, self.sequence_ids)):
            if sequence == sequence_index and start <= char_index < end:
                return k
        return None

    def char_to_word(self, char_index: int, sequence_index: int = 0) -> int | None:
        token = self.char_to_token(char_index, sequence_index)
        return None if token is None else self.word_ids[token]

    def word_to_tokens(self, word_index: int, sequence_index: int = 0) -> tuple[int, int] | None:
        """The tokens [start, end) of word ``word_index`` of sequence ``sequence_index``; None if absent."""
        found = [k for k, (word, sequence) in enumerate(zip(self.word_ids, self.sequence_ids))
                 if word == word_index and sequence == sequence_index]
        return (found[0], found[-1] + 1) if found else None

    def word_to_chars(self, word_index: int, sequence_index: int = 0) -> tuple[int, int] | None:
        tokens = self.word_to_tokens(word_index, sequence_index)
        if tokens is None:
            return None
        spans = self.offsets[tokens[0]:tokens[1]]
        return min(s for s, _ in spans), max(e for _, e in spans)


_COLUMNS = ("ids", "tokens", "type_ids", "special_tokens_mask", "attention_mask", "offsets", "word_ids",
            "sequence_ids")


def trim_offsets(encoding: Encoding, add_prefix_space: bool) -> Encoding:
    """Byte-level offsets without the spaces at the ends of each token ('Ġworld' -> 'world'), as
    the ``tokenizers`` ByteLevel and RoBERTa processors do with ``trim_offsets``: a start moves
    past the token's leading spaces (all but the one ``add_prefix_space`` added, on the text's
    first token), an end back before its trailing ones; a span never turns around."""
    out = Encoding(*(list(getattr(encoding, name)) for name in _COLUMNS))
    edges: dict[str, tuple[int, int]] = {}           # the leading and trailing spaces of each token string
    for k, token in enumerate(out.tokens):
        if token not in edges:
            edges[token] = (len(token) - len(token.lstrip(_SPACES)), len(token) - len(token.rstrip(_SPACES)))
        leading, trailing = edges[token]
        if not (leading or trailing):
            continue
        start, end = out.offsets[k]
        if leading and add_prefix_space and leading == 1 and (k == 0 or start == 0):
            leading = 0
        if leading:
            start = min(start + leading, end)
        if trailing and end >= trailing:
            end = max(end - trailing, start)
        out.offsets[k] = (start, end)
    return out


def default_process(first: Encoding, second: Encoding | None) -> Encoding:
    """No special tokens: the first text (type 0), then the second (type 1)."""
    out = Encoding()
    out.extend(first, 0, 0)
    if second is not None:
        out.extend(second, 1, 1)
    return out


class PostProcessor:
    type_name = ""

    def added_count(self, is_pair: bool) -> int:
        return 0

    def process(self, first: Encoding, second: Encoding | None) -> Encoding:
        return default_process(first, second)

    def to_json(self) -> dict:
        return {"type": self.type_name}

    @classmethod
    def from_json(cls, data: dict, path: str) -> PostProcessor:
        return cls()


def _parse_piece(piece: Any, path: str) -> tuple[str, str, int]:
    """('Sequence', 'A' or 'B', type id) or ('SpecialToken', name, type id) of one template piece."""
    if isinstance(piece, str):
        name, _, type_id = piece.partition(":")
        if name in ("$A", "$B", "$"):
            return "Sequence", name[1:] or "A", int(type_id or 0)
        return "SpecialToken", name, int(type_id or 0)
    if isinstance(piece, dict) and len(piece) == 1 and next(iter(piece)) in ("Sequence", "SpecialToken"):
        kind, body = next(iter(piece.items()))
        return kind, require(body, "id", path), int(body.get("type_id", 0))
    raise ValueError(f"tokenizer.json: {path} must be a template piece ({{'Sequence': ...}} or "
                     f"{{'SpecialToken': ...}}), got {piece!r}")


def _parse_template(template: Any, path: str) -> list[tuple[str, str, int]]:
    if isinstance(template, str):
        template = template.split()
    return [_parse_piece(piece, f"{path}[{k}]") for k, piece in enumerate(template)]


class TemplateProcessing(PostProcessor):
    type_name = "TemplateProcessing"

    def __init__(self, single, pair, special_tokens: dict[str, dict]):
        self.single = _parse_template(single, "post_processor.single")
        self.pair = _parse_template(pair, "post_processor.pair") if pair is not None else None
        self.special_tokens = special_tokens
        for kind, name, _ in self.single + (self.pair or []):
            if kind == "SpecialToken" and name not in special_tokens:
                raise ValueError(f"tokenizer.json: the post_processor template names the special token {name!r} "
                                 f"but special_tokens defines only {list(special_tokens)}")

    def added_count(self, is_pair: bool) -> int:
        template = self.pair if is_pair else self.single
        return sum(len(self.special_tokens[name]["ids"]) for kind, name, _ in template or [] if kind == "SpecialToken")

    def process(self, first: Encoding, second: Encoding | None) -> Encoding:
        if second is not None and self.pair is None:
            raise ValueError("TemplateProcessing: a pair of texts was given but the template has no pair form")
        out = Encoding()
        for kind, name, type_id in self.pair if second is not None else self.single:
            if kind == "Sequence":
                out.extend(first if name == "A" else second, type_id, 0 if name == "A" else 1)
            else:
                special = self.special_tokens[name]
                for token_id, token in zip(special["ids"], special["tokens"]):
                    out.append(int(token_id), token, type_id, special=True)
        return out

    def to_json(self) -> dict:
        def pieces(template):
            return [{kind: {"id": name, "type_id": type_id}} for kind, name, type_id in template]

        return {"type": self.type_name, "single": pieces(self.single),
                "pair": None if self.pair is None else pieces(self.pair), "special_tokens": self.special_tokens}

    @classmethod
    def from_json(cls, data: dict, path: str) -> TemplateProcessing:
        specials = data.get("special_tokens", {})
        if isinstance(specials, list):          # the Python API's form: [(token, id), ...]
            specials = {token: {"id": token, "ids": [token_id], "tokens": [token]} for token, token_id in specials}
        return cls(require(data, "single", path), data.get("pair"), specials)


class BertProcessing(PostProcessor):
    type_name = "BertProcessing"
    extra_pair_sep = False

    def __init__(self, sep: tuple[str, int], cls: tuple[str, int], extra: dict | None = None):
        self.sep, self.cls, self.extra = (sep[0], int(sep[1])), (cls[0], int(cls[1])), extra or {}

    def added_count(self, is_pair: bool) -> int:
        return 2 + (1 + self.extra_pair_sep) * is_pair

    def process(self, first: Encoding, second: Encoding | None) -> Encoding:
        out = Encoding()
        first, second = self._trimmed(first), None if second is None else self._trimmed(second)
        out.append(self.cls[1], self.cls[0], 0, special=True)
        out.extend(first, 0, 0)
        out.append(self.sep[1], self.sep[0], 0, special=True)
        if second is not None:
            if self.extra_pair_sep:
                out.append(self.sep[1], self.sep[0], 1, special=True)
            out.extend(second, 1, 1)
            out.append(self.sep[1], self.sep[0], 1, special=True)
        return out

    def _trimmed(self, encoding: Encoding) -> Encoding:
        return encoding

    def to_json(self) -> dict:
        return {"type": self.type_name, "sep": list(self.sep), "cls": list(self.cls), **self.extra}

    @classmethod
    def from_json(cls, data: dict, path: str) -> BertProcessing:
        extra = {k: v for k, v in data.items() if k not in ("type", "sep", "cls")}
        return cls(require(data, "sep", path), require(data, "cls", path), extra)


class RobertaProcessing(BertProcessing):
    type_name = "RobertaProcessing"
    extra_pair_sep = True

    def _trimmed(self, encoding: Encoding) -> Encoding:
        if not self.extra.get("trim_offsets", True):
            return encoding
        return trim_offsets(encoding, bool(self.extra.get("add_prefix_space", True)))


class ByteLevel(PostProcessor):
    type_name = "ByteLevel"

    def __init__(self, extra: dict | None = None):
        self.extra = extra or {}

    def trimmed(self, encoding: Encoding) -> Encoding:
        if not self.extra.get("trim_offsets", True):
            return encoding
        return trim_offsets(encoding, bool(self.extra.get("add_prefix_space", True)))

    def process(self, first: Encoding, second: Encoding | None) -> Encoding:
        return default_process(self.trimmed(first), None if second is None else self.trimmed(second))

    def to_json(self) -> dict:
        return {"type": self.type_name, **self.extra}

    @classmethod
    def from_json(cls, data: dict, path: str) -> ByteLevel:
        return cls({k: v for k, v in data.items() if k != "type"})


class ProcessorSequence(PostProcessor):
    type_name = "Sequence"

    def __init__(self, processors: list[PostProcessor]):
        self.processors = processors

    def added_count(self, is_pair: bool) -> int:
        return sum(p.added_count(is_pair) for p in self.processors)

    def process(self, first: Encoding, second: Encoding | None) -> Encoding:
        """The processors in order, each on the output of the one before; ByteLevel ones trim
        offsets only, and the first other one joins a pair into one encoding."""
        for processor in self.processors:
            if isinstance(processor, ByteLevel):
                first, second = processor.trimmed(first), None if second is None else processor.trimmed(second)
            else:
                first, second = processor.process(first, second), None
        return first if second is None else default_process(first, second)

    def to_json(self) -> dict:
        return {"type": self.type_name, "processors": [p.to_json() for p in self.processors]}

    @classmethod
    def from_json(cls, data: dict, path: str) -> ProcessorSequence:
        items = require(data, "processors", path)
        return cls([post_processor_from_json(item, f"{path}.processors[{k}]") for k, item in enumerate(items)])


PROCESSORS = {c.type_name: c for c in (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel,
                                       ProcessorSequence)}


def post_processor_from_json(data: Any, path: str = "post_processor") -> PostProcessor | None:
    """The post-processor of a tokenizer.json ``post_processor`` entry (None for null)."""
    if data is None:
        return None
    return component_class(PROCESSORS, data, path, "post_processor").from_json(data, path)
