"""Post-processors of ``tokenizer.json`` files: the encodings of a text (and of a pair) -> one
encoding with the special tokens a model expects, and the token type (segment) of each token.

* TemplateProcessing: ``single`` and ``pair`` are lists of pieces, ``$A``/``$B`` the texts and
  named special tokens (each one or more ids), each piece with its type id;
  "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1" is BERT's pair template.
* BertProcessing: [CLS] A [SEP] (B [SEP]), types 0 then 1.
* RobertaProcessing: <s> A </s> (</s> B </s>), types 0 then 1.
* ByteLevel: nothing to add (its offset trimming does not change ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.text.hf_normalizers import component_class, require

__all__ = ["Encoding", "PostProcessor", "post_processor_from_json"]


@dataclass
class Encoding:
    """One encoded text: ids, token strings, token type ids, 1 for special tokens, 1 for real tokens."""

    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    type_ids: list[int] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    attention_mask: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, token_id: int, token: str, type_id: int = 0, special: bool = False) -> None:
        self.ids.append(token_id)
        self.tokens.append(token)
        self.type_ids.append(type_id)
        self.special_tokens_mask.append(int(special))
        self.attention_mask.append(1)

    def extend(self, other: Encoding, type_id: int | None = None) -> None:
        """``other``'s tokens appended, with ``type_id`` (None: their own)."""
        self.ids += other.ids
        self.tokens += other.tokens
        self.type_ids += other.type_ids if type_id is None else [type_id] * len(other)
        self.special_tokens_mask += other.special_tokens_mask
        self.attention_mask += other.attention_mask

    def truncated(self, length: int, from_left: bool = False) -> Encoding:
        keep = slice(len(self) - length, None) if from_left else slice(0, length)
        return Encoding(self.ids[keep], self.tokens[keep], self.type_ids[keep], self.special_tokens_mask[keep],
                        self.attention_mask[keep])


def default_process(first: Encoding, second: Encoding | None) -> Encoding:
    """No special tokens: the first text (type 0), then the second (type 1)."""
    out = Encoding()
    out.extend(first, 0)
    if second is not None:
        out.extend(second, 1)
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
                out.extend(first if name == "A" else second, type_id)
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
        out.append(self.cls[1], self.cls[0], 0, special=True)
        out.extend(first, 0)
        out.append(self.sep[1], self.sep[0], 0, special=True)
        if second is not None:
            if self.extra_pair_sep:
                out.append(self.sep[1], self.sep[0], 1, special=True)
            out.extend(second, 1)
            out.append(self.sep[1], self.sep[0], 1, special=True)
        return out

    def to_json(self) -> dict:
        return {"type": self.type_name, "sep": list(self.sep), "cls": list(self.cls), **self.extra}

    @classmethod
    def from_json(cls, data: dict, path: str) -> BertProcessing:
        extra = {k: v for k, v in data.items() if k not in ("type", "sep", "cls")}
        return cls(require(data, "sep", path), require(data, "cls", path), extra)


class RobertaProcessing(BertProcessing):
    type_name = "RobertaProcessing"
    extra_pair_sep = True


class ByteLevel(PostProcessor):
    type_name = "ByteLevel"

    def __init__(self, extra: dict | None = None):
        self.extra = extra or {}

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
        """The processors in order, each on the output of the one before; ByteLevel ones change
        nothing, and the first other one joins a pair into one encoding."""
        for processor in self.processors:
            if not isinstance(processor, ByteLevel):
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
