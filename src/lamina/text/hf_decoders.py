"""Decoders of ``tokenizer.json`` files: token strings -> text.

A decoder maps the list of tokens to a new list (``decode_chain``); the text is the final list joined.

* ByteLevel: every token's characters read as GPT-2 bytes, the whole as UTF-8 (invalid bytes -> U+FFFD);
* ByteFallback: each run of '<0xNN>' tokens -> the text of those bytes (one U+FFFD per byte when they are
  not UTF-8);
* Metaspace: '▁' -> ' ', except in the first token, where the '▁' are dropped (the pre-tokenizer
  prepended one) unless prepend_scheme is never;
* WordPiece: '##' pieces glued to the token before, a space before the others;
* BPEDecoder: the end-of-word suffix -> ' ' (nothing after the last token);
* Strip: up to ``start``/``stop`` copies of ``content`` removed from each token's ends;
* Fuse: all tokens joined into one; Replace: a string or pattern replaced in each token.
"""

from __future__ import annotations

import re
from typing import Any

from lamina.text.gpt2_tokenizer import bytes_to_unicode
from lamina.text.hf_normalizers import PatternReplacement, component_class, require
from lamina.text.hf_pre_tokenizers import prepend_scheme

__all__ = ["Decoder", "decoder_from_json"]

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
              (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_spaces(text: str) -> str:
    """The space before . ? ! , and English contractions removed."""
    for spaced, joined in _CLEAN_UPS:
        text = text.replace(spaced, joined)
    return text


class Decoder:
    type_name = ""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        raise NotImplementedError

    def decode(self, tokens: list[str]) -> str:
        return "".join(self.decode_chain(tokens))

    def to_json(self) -> dict:
        return {"type": self.type_name}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Decoder:
        return cls()


class ByteLevel(Decoder):
    type_name = "ByteLevel"

    def __init__(self, extra: dict | None = None):
        self.extra = extra or {}
        self._bytes = {char: b for b, char in bytes_to_unicode().items()}

    def decode_chain(self, tokens: list[str]) -> list[str]:
        data = bytearray()
        for token in tokens:
            if all(char in self._bytes for char in token):
                data.extend(self._bytes[char] for char in token)
            else:
                data.extend(token.encode("utf-8"))
        return [data.decode("utf-8", errors="replace")]

    def to_json(self) -> dict:
        return {"type": self.type_name, **self.extra}

    @classmethod
    def from_json(cls, data: dict, path: str) -> ByteLevel:
        return cls({k: v for k, v in data.items() if k != "type"})


class ByteFallback(Decoder):
    type_name = "ByteFallback"

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out: list[str] = []
        pending = bytearray()

        def flush():
            if pending:
                try:
                    out.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    out.extend("\ufffd" * len(pending))
                pending.clear()

        for token in tokens:
            match = _BYTE_TOKEN.fullmatch(token)
            if match:
                pending.append(int(match.group(1), 16))
            else:
                flush()
                out.append(token)
        flush()
        return out


class Fuse(Decoder):
    type_name = "Fuse"

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return ["".join(tokens)]


class Strip(Decoder):
    type_name = "Strip"

    def __init__(self, content: str = " ", start: int = 0, stop: int = 0):
        self.content, self.start, self.stop = content, start, stop

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for token in tokens:
            chars = list(token)
            head = 0
            while head < min(self.start, len(chars)) and chars[head] == self.content:
                head += 1
            tail = len(chars)
            while len(chars) - tail < self.stop and tail > head and chars[tail - 1] == self.content:
                tail -= 1
            out.append("".join(chars[head:tail]))
        return out

    def to_json(self) -> dict:
        return {"type": self.type_name, "content": self.content, "start": self.start, "stop": self.stop}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Strip:
        return cls(require(data, "content", path), int(data.get("start", 0)), int(data.get("stop", 0)))


class Replace(PatternReplacement, Decoder):
    def decode_chain(self, tokens: list[str]) -> list[str]:
        return [self.substitute(token) for token in tokens]


class Metaspace(Decoder):
    type_name = "Metaspace"

    def __init__(self, replacement: str = "\u2581", scheme: str = "always", split: bool = True):
        self.replacement, self.scheme, self.split = replacement, scheme, split

    def decode_chain(self, tokens: list[str]) -> list[str]:
        drop_first = self.scheme != "never"
        return [token.replace(self.replacement, "" if k == 0 and drop_first else " ")
                for k, token in enumerate(tokens)]

    def to_json(self) -> dict:
        return {"type": self.type_name, "replacement": self.replacement, "prepend_scheme": self.scheme,
                "split": self.split}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Metaspace:
        return cls(data.get("replacement", data.get("str_rep", "\u2581")), prepend_scheme(data, path),
                   bool(data.get("split", True)))


class WordPiece(Decoder):
    type_name = "WordPiece"

    def __init__(self, prefix: str = "##", cleanup: bool = True):
        self.prefix, self.cleanup = prefix, cleanup

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for k, token in enumerate(tokens):
            if k:
                token = token[len(self.prefix):] if token.startswith(self.prefix) else " " + token
            out.append(clean_up_spaces(token) if self.cleanup else token)
        return out

    def to_json(self) -> dict:
        return {"type": self.type_name, "prefix": self.prefix, "cleanup": self.cleanup}

    @classmethod
    def from_json(cls, data: dict, path: str) -> WordPiece:
        return cls(data.get("prefix", "##"), bool(data.get("cleanup", True)))


class BPEDecoder(Decoder):
    type_name = "BPEDecoder"

    def __init__(self, suffix: str = "</w>"):
        self.suffix = suffix

    def decode_chain(self, tokens: list[str]) -> list[str]:
        last = len(tokens) - 1
        return [token.replace(self.suffix, "" if k == last else " ") for k, token in enumerate(tokens)]

    def to_json(self) -> dict:
        return {"type": self.type_name, "suffix": self.suffix}

    @classmethod
    def from_json(cls, data: dict, path: str) -> BPEDecoder:
        return cls(data.get("suffix", "</w>"))


class DecoderSequence(Decoder):
    type_name = "Sequence"

    def __init__(self, decoders: list[Decoder]):
        self.decoders = decoders

    def decode_chain(self, tokens: list[str]) -> list[str]:
        for decoder in self.decoders:
            tokens = decoder.decode_chain(tokens)
        return tokens

    def to_json(self) -> dict:
        return {"type": self.type_name, "decoders": [d.to_json() for d in self.decoders]}

    @classmethod
    def from_json(cls, data: dict, path: str) -> DecoderSequence:
        items = require(data, "decoders", path)
        return cls([decoder_from_json(item, f"{path}.decoders[{k}]") for k, item in enumerate(items)])


DECODERS = {c.type_name: c for c in (ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, WordPiece, BPEDecoder,
                                     DecoderSequence)}


def decoder_from_json(data: Any, path: str = "decoder") -> Decoder | None:
    """The decoder of a tokenizer.json ``decoder`` entry (None for null)."""
    if data is None:
        return None
    return component_class(DECODERS, data, path, "decoder").from_json(data, path)
