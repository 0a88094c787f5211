"""Training the model of an :class:`~lamina.text.HFTokenizer` on texts, as ``tokenizers.Tokenizer.train``
and transformers' ``train_new_from_iterator`` do.

* :func:`count_words`: every text through the tokenizer's normalizer and pre-tokenizer (ByteLevel
  words spelled in its byte characters), each resulting word counted. Added tokens are not cut
  out first (nor are they by the ``tokenizers`` library when it trains).
* :func:`trained_model`: the trainer's model of those counts and the added tokens that go with
  it: the tokenizer's own added tokens, then the trainer's special tokens (marked special), each
  with its id in the new model's vocabulary (the special tokens are first there), or else the next
  free id. The post-processor is left as it is (as the ``tokenizers`` library leaves it).
* :func:`train_new`: a tokenizer of the same kind (normalizer, pre-tokenizer, decoder, model
  settings) trained afresh: the special added tokens become the trainer's special tokens (all
  added tokens for a Unigram model, as transformers does), with ``new_special_tokens`` after them;
  a BPE model's continuing prefix and end-of-word suffix and a Unigram model's unk token go to
  the trainer; a ByteLevel pre-tokenizer (alone or in a Sequence) gives the 256 byte characters
  as initial alphabet; the post-processor's special tokens get their new ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from lamina.text.gpt2_tokenizer import bytes_to_unicode
from lamina.text.hf_alignment import AlignedString, Words
from lamina.text.hf_encoding_parts import AddedToken
from lamina.text.hf_models import Model
from lamina.text.hf_trainers import BpeTrainer, Trainer, WordLevelTrainer, WordPieceTrainer
from lamina.text.hf_unigram_trainer import UnigramTrainer

__all__ = ["TRAINERS", "byte_level_alphabet", "count_words", "default_trainer", "train_new", "trained_model"]

TRAINERS: dict[str, type[Trainer]] = {"BPE": BpeTrainer, "WordPiece": WordPieceTrainer, "Unigram": UnigramTrainer,
                                      "WordLevel": WordLevelTrainer}


def byte_level_alphabet() -> list[str]:
    """The 256 characters a ByteLevel pre-tokenizer spells bytes with (``ByteLevel.alphabet()``)."""
    return sorted(bytes_to_unicode().values())


def default_trainer(model: Model) -> Trainer:
    """The trainer of ``model``'s kind with its default settings (``model.get_trainer()``)."""
    return TRAINERS[model.type_name]()


def _texts(items: Iterable[Any], who: str) -> Iterable[str]:
    """The texts of ``items``, each a text or a list of texts (a batch)."""
    for k, item in enumerate(items):
        if isinstance(item, str):
            yield item
        elif isinstance(item, list | tuple) and all(isinstance(text, str) for text in item):
            yield from item
        else:
            raise TypeError(f"{who}: item {k} of the texts is {type(item).__name__} {item!r:.40}; expected a str or "
                            "a list of str")


def count_words(tokenizer: Any, texts: Iterable[Any], who: str = "count_words") -> dict[str, int]:
    """word -> number of occurrences over ``texts`` (module docstring), in order of first appearance."""
    counts: dict[str, int] = {}
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    for text in _texts(texts, who):
        aligned = AlignedString.original(text)
        if normalizer is not None:
            aligned = normalizer.normalize_aligned(aligned)
        if pre_tokenizer is None:
            cuts = [Words(aligned, [(0, len(aligned))] if aligned.text else [])]
        else:
            cuts = pre_tokenizer.pre_tokenize_words([aligned], True)
        for cut in cuts:
            source = cut.source.text
            for start, end in cut.ranges:
                word = source[start:end] if cut.spell is None else cut.spell(source[start:end])
                counts[word] = counts.get(word, 0) + 1
    return counts


def trained_model(tokenizer: Any, texts: Iterable[Any], trainer: Trainer | None,
                  who: str) -> tuple[Model, list[AddedToken]]:
    """The model ``trainer`` (None: :func:`default_trainer`) learns from ``texts``, and the added
    tokens (module docstring)."""
    model = tokenizer.model
    trainer = default_trainer(model) if trainer is None else trainer
    if not isinstance(trainer, Trainer):
        raise TypeError(f"{who}: trainer must be a BpeTrainer, WordPieceTrainer, UnigramTrainer or WordLevelTrainer, "
                        f"got {type(trainer).__name__}")
    if trainer.model_type != model.type_name:
        raise ValueError(f"{who}: a {trainer.name} trains a {trainer.model_type} model but this tokenizer's model is "
                         f"{model.type_name}; use a {TRAINERS[model.type_name].__name__}")
    new_model = trainer.train_model(count_words(tokenizer, texts, f"{who} ({trainer.name})"), model)
    added: list[AddedToken] = []
    free = max(new_model.id_to_token, default=-1) + 1
    for token in [*tokenizer.added_tokens, *(replace(t, special=True) for t in trainer.special_tokens)]:
        if any(token.content == t.content for t in added):
            continue
        token_id = new_model.vocab.get(token.content)
        if token_id is None:
            token_id, free = free, free + 1
        added.append(replace(token, id=token_id))
    return new_model, added


def _remap_post_processor(data: dict, token_id: Callable[[str], int | None], mapping: Mapping[str, str]) -> None:
    """The ids of the special tokens of a post-processor's JSON (and of those it holds) replaced by their new ones."""
    def new_id(token: str) -> int:
        found = token_id(token)
        if found is None:
            raise ValueError(f"HFTokenizer.train_new_from_iterator: the post-processor's special token {token!r} is "
                             "not in the trained vocabulary")
        return found

    for inner in data.get("processors", []):
        _remap_post_processor(inner, token_id, mapping)
    for entry in data.get("special_tokens", {}).values():
        entry["tokens"] = [mapping.get(token, token) for token in entry["tokens"]]
        entry["ids"] = [new_id(token) for token in entry["tokens"]]
    for name in ("cls", "sep"):
        if name in data:
            token = mapping.get(data[name][0], data[name][0])
            data[name] = [token, new_id(token)]


def _uses_byte_level(pre_tokenizer: dict | None) -> bool:
    if pre_tokenizer is None:
        return False
    return pre_tokenizer["type"] == "ByteLevel" or any(
        inner["type"] == "ByteLevel" for inner in pre_tokenizer.get("pretokenizers", []))


def train_new(tokenizer: Any, texts: Iterable[Any], vocab_size: int, length: int | None,
              new_special_tokens: Iterable[str | AddedToken] | None, special_tokens_map: Mapping[str, str] | None,
              options: dict) -> Any:
    """A new tokenizer of ``tokenizer``'s kind trained on ``texts`` (module docstring)."""
    data = tokenizer.to_json()
    post_processor, model = data.pop("post_processor"), data["model"]
    mapping = dict(special_tokens_map or {})
    kind = model["type"]
    if model.get("unk_token") in mapping:
        model["unk_token"] = mapping[model["unk_token"]]
    unk = model.get("unk_token")
    if kind == "Unigram":
        unk = None if model.get("unk_id") is None else model["vocab"][model["unk_id"]][0]
        unk = mapping.get(unk, unk)
        model.update(unk_id=None if unk is None else 0, vocab=[] if unk is None else [[unk, 0.0]])
    else:       # an empty vocabulary (but for the unknown token the model needs), filled by the trainer
        model["vocab"] = {} if unk is None else {unk: 0}
        model.pop("merges", None)
    specials = []
    for token in tokenizer.added_tokens:
        if token.special or kind == "Unigram":
            specials.append(replace(token, content=mapping.get(token.content, token.content), special=True))
    specials += list(new_special_tokens or [])
    if kind == "BPE":
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key) and key not in options:
                options[key] = model[key]
    if kind == "Unigram" and unk is not None:
        options.setdefault("unk_token", unk)
    if _uses_byte_level(data.get("pre_tokenizer")):
        options.setdefault("initial_alphabet", byte_level_alphabet())
    trainer = TRAINERS[kind](vocab_size=vocab_size, special_tokens=specials, **options)
    data.update(added_tokens=[], post_processor=None)
    fresh = type(tokenizer).from_str(json.dumps(data))
    fresh.train_from_iterator(texts, trainer, length)
    if post_processor is None:
        return fresh
    _remap_post_processor(post_processor, fresh.token_to_id, mapping)
    trained = fresh.to_json()
    trained["post_processor"] = post_processor
    return type(tokenizer).from_str(json.dumps(trained))
