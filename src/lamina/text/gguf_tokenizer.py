"""Tokenizers stored in llama.cpp's GGUF files (``tokenizer.ggml.*``) as :class:`HFTokenizer`.

The file lists the tokens (``tokens``, id order), their kinds (``token_type``: 1 normal,
2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) and either

* ``model`` 'llama': a SentencePiece BPE vocabulary with ``scores``. llama.cpp merges, in a
  word, the adjacent pair whose joined token scores highest, spaces written '▁' and one '▁'
  prepended (``add_space_prefix``, default on); text no token spells falls back to byte
  tokens '<0xNN>'. That is a BPE whose merges are ranked by the joined token's score (every
  way of splitting a token into two tokens is a merge), as Hugging Face's conversion of
  SentencePiece models builds them; or
* ``model`` 'gpt2': a byte-level BPE with ``merges`` ('a b'), pre-split by the regular
  expression named by ``pre`` ('default' / 'gpt-2': GPT-2's; 'llama-bpe': Llama 3's, whose
  whole-word tokens skip the merges).

Control tokens (type 3) become special added tokens, user-defined ones (type 4) added tokens;
``bos_token_id`` / ``eos_token_id`` are put around each text when ``add_bos_token`` /
``add_eos_token`` say so (default: BOS for 'llama', nothing for 'gpt2').
"""

from __future__ import annotations

import json

from lamina.io.gguf import GGUFFile, read_gguf
from lamina.text.hf_tokenizer import HFTokenizer

__all__ = ["tokenizer_from_gguf", "tokenizer_json_from_gguf"]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _merges_by_score(tokens: list[str], scores: list[float], types: list[int]) -> list[list[str]]:
    """Every split of a token into two tokens, ranked by the joined token's score (highest
    first), then by the ids of the two parts."""
    ids = {token: i for i, token in enumerate(tokens) if types[i] not in (CONTROL, BYTE)}
    merges = []
    for token, joined in ids.items():
        splits = [(ids[token[:k]], ids[token[k:]]) for k in range(1, len(token))
                  if token[:k] in ids and token[k:] in ids]
        merges.extend((-scores[joined], left, right) for left, right in sorted(splits))
    merges.sort(key=lambda merge: merge[0])                # stable: equal scores keep id order
    return [[tokens[left], tokens[right]] for _, left, right in merges]


def _added_tokens(tokens: list[str], types: list[int], extra: set[int]) -> list[dict]:
    return [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": kind != USER_DEFINED}
            for i, (token, kind) in enumerate(zip(tokens, types, strict=True))
            if kind in (CONTROL, USER_DEFINED) or i in extra]


def _template(tokens: list[str], metadata: dict, bos_default: bool) -> dict | None:
    """The post-processor putting BOS / EOS around each text, when the file asks for them."""
    def end(kind: str, default: bool) -> list[int]:
        token_id = metadata.get(f"tokenizer.ggml.{kind}_token_id")
        wanted = metadata.get(f"tokenizer.ggml.add_{kind}_token", default)
        return [token_id] if wanted and token_id is not None else []

    def specials(ids: list[int]) -> list[dict]:
        return [{"SpecialToken": {"id": tokens[i], "type_id": 0}} for i in ids]

    first, last = end("bos", bos_default), end("eos", False)
    if not first and not last:
        return None
    single = specials(first) + [{"Sequence": {"id": "A", "type_id": 0}}] + specials(last)
    pair = single + specials(first) + [{"Sequence": {"id": "B", "type_id": 1}}] + specials(last)
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {tokens[i]: {"id": tokens[i], "ids": [i], "tokens": [tokens[i]]} for i in first + last}}


def _llama_parts(file: GGUFFile, tokens, types) -> dict:
    metadata = file.metadata
    if "tokenizer.ggml.scores" not in metadata:
        raise KeyError(f"tokenizer_from_gguf: {file.path}: a 'llama' tokenizer needs tokenizer.ggml.scores")
    unknown = metadata.get("tokenizer.ggml.unknown_token_id", types.index(UNKNOWN) if UNKNOWN in types else None)
    replace_spaces = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    prefix = [{"type": "Prepend", "prepend": SPACE}] if metadata.get("tokenizer.ggml.add_space_prefix", True) else []
    return {
        "added_tokens": _added_tokens(tokens, types, set() if unknown is None else {unknown}),
        "normalizer": {"type": "Sequence", "normalizers": prefix + [replace_spaces]},
        "pre_tokenizer": None,
        "post_processor": _template(tokens, metadata, bos_default=True),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1 if prefix else 0, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None if unknown is None else tokens[unknown],
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(tokens)},
                  "merges": _merges_by_score(tokens, metadata["tokenizer.ggml.scores"], types)}}


def _gpt2_parts(file: GGUFFile, tokens, types) -> dict:
    metadata = file.metadata
    if "tokenizer.ggml.merges" not in metadata:
        raise KeyError(f"tokenizer_from_gguf: {file.path}: a 'gpt2' tokenizer needs tokenizer.ggml.merges")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre in ("default", "gpt-2"):
        pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    elif pre in ("llama-bpe", "llama3"):
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    else:
        raise NotImplementedError(f"tokenizer_from_gguf: {file.path}: tokenizer.ggml.pre {pre!r} is not supported "
                                  "('default', 'gpt-2', 'llama-bpe')")
    return {
        "added_tokens": _added_tokens(tokens, types, set()),
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": _template(tokens, metadata, bos_default=False),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": pre in ("llama-bpe", "llama3"),
                  "vocab": {token: i for i, token in enumerate(tokens)},
                  "merges": [merge.split(" ", 1) for merge in metadata["tokenizer.ggml.merges"]]}}


def tokenizer_json_from_gguf(source) -> dict:
    """The ``tokenizer.json`` content equivalent to a GGUF file's tokenizer (a path or a
    :class:`~lamina.io.gguf.GGUFFile`)."""
    file = source if isinstance(source, GGUFFile) else read_gguf(source)
    metadata = file.metadata
    if "tokenizer.ggml.tokens" not in metadata:
        raise KeyError(f"tokenizer_from_gguf: {file.path}: missing metadata key 'tokenizer.ggml.tokens'")
    tokens = metadata["tokenizer.ggml.tokens"]
    types = metadata.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    model = metadata.get("tokenizer.ggml.model")
    builders = {"llama": _llama_parts, "gpt2": _gpt2_parts}
    if model not in builders:
        raise NotImplementedError(f"tokenizer_from_gguf: {file.path}: tokenizer.ggml.model {model!r} is not "
                                  f"supported ({', '.join(builders)})")
    return {"version": "1.0", "truncation": None, "padding": None, **builders[model](file, tokens, types)}


def tokenizer_from_gguf(source) -> HFTokenizer:
    """An :class:`HFTokenizer` encoding and decoding as the tokenizer of a GGUF file (a path
    or a :class:`~lamina.io.gguf.GGUFFile`): 'llama' (SentencePiece BPE with scores) or
    'gpt2' (byte-level BPE with merges); see the module docstring."""
    return HFTokenizer.from_str(json.dumps(tokenizer_json_from_gguf(source)))
