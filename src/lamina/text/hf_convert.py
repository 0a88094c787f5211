"""lamina's own tokenizers as ``tokenizer.json`` files, so that :class:`~lamina.text.HFTokenizer`
reads them and gives the same ids.

* GPT-2 (:class:`~lamina.text.GPT2Tokenizer`): a BPE model over GPT-2's byte characters,
  ByteLevel pre-tokenizer (no prefix space), post-processor and decoder; the special tokens
  become added tokens matched in the raw text (GPT2Tokenizer itself matches them only when
  ``allowed_special`` names them).
* BERT (:class:`~lamina.text.WordPieceTokenizer`): NFC then BertNormalizer, BertPreTokenizer,
  a WordPiece model, the template [CLS] A [SEP] (B [SEP], type 1) and the WordPiece decoder
  without the space clean-up (as ``WordPieceTokenizer.decode``'s default).

:func:`call_as_hf` gives both tokenizers a Hugging Face-style call (``tokenizer(texts, padding=True,
return_offsets_mapping=True, ...)``) through the HFTokenizer of their tokenizer.json, made once and kept.
"""

from __future__ import annotations

from typing import Any

from lamina.text.gpt2_tokenizer import GPT2Tokenizer
from lamina.text.hf_tokenizer import BatchEncoding, HFTokenizer
from lamina.text.wordpiece import CONTINUATION, WordPieceTokenizer

__all__ = ["call_as_hf", "gpt2_tokenizer_json", "wordpiece_tokenizer_json"]


def _added(token: str, token_id: int) -> dict:
    return {"id": token_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def gpt2_tokenizer_json(tokenizer: GPT2Tokenizer) -> dict:
    """The tokenizer.json content (a dict) of a GPT2Tokenizer."""
    vocab = {token: tokenizer.token_to_id(token) for token in tokenizer.tokens(range(len(tokenizer)))}
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(t, tokenizer.token_to_id(t)) for t in tokenizer.special_tokens],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in tokenizer.merges]},
    }


def wordpiece_tokenizer_json(tokenizer: WordPieceTokenizer) -> dict:
    """The tokenizer.json content (a dict) of a WordPieceTokenizer."""
    special, ids = tokenizer.special, tokenizer.token_to_id
    cls, sep = special["cls"], special["sep"]

    def piece(kind: str, name: str, type_id: int) -> dict:
        return {kind: {"id": name, "type_id": type_id}}

    single = [piece("SpecialToken", cls, 0), piece("Sequence", "A", 0), piece("SpecialToken", sep, 0)]
    pair = single + [piece("Sequence", "B", 1), piece("SpecialToken", sep, 1)]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(t, ids[t]) for t in sorted(set(special.values()), key=ids.get)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
             "lowercase": tokenizer.lower_case}]},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair,
                           "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in (cls, sep)}},
        "decoder": {"type": "WordPiece", "prefix": CONTINUATION, "cleanup": False},
        "model": {"type": "WordPiece", "unk_token": special["unk"], "continuing_subword_prefix": CONTINUATION,
                  "max_input_chars_per_word": tokenizer.max_word_length, "vocab": dict(ids)},
    }


def call_as_hf(tokenizer: GPT2Tokenizer | WordPieceTokenizer, text, text_pair=None, **options: Any) -> BatchEncoding:
    """:meth:`HFTokenizer.__call__ <lamina.text.HFTokenizer.__call__>` on the tokenizer.json of
    ``tokenizer`` (built on first use and kept on the tokenizer, which is not expected to change)."""
    converted = getattr(tokenizer, "_hf_tokenizer", None)
    if converted is None:
        converted = HFTokenizer.from_str(tokenizer.to_hf_json())
        tokenizer._hf_tokenizer = converted
    return converted(text, text_pair, **options)
