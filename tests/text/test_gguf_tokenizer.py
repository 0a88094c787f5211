"""Tokenizers from GGUF metadata: a SentencePiece ('llama') vocabulary tokenizes as llama.cpp's
score-driven merging (written out here as a reference), byte-level BPE ('gpt2') vocabularies
with GPT-2's and Llama 3's pre-splitting, special tokens, BOS, decoding, and the errors."""

from __future__ import annotations

import pytest

from lamina.io.gguf import write_gguf
from lamina.text.gguf_tokenizer import tokenizer_from_gguf
from lamina.text.gpt2_tokenizer import bytes_to_unicode

SPACE = "\u2581"
PIECES = {"▁": -1.0, "h": -2.0, "e": -3.0, "l": -4.0, "o": -5.0, "w": -6.0, "r": -7.0, "d": -8.0, "a": -9.0,
          "ll": -1.5, "he": -2.5, "▁h": -3.5, "llo": -0.5, "▁he": -4.5, "hello": -9.5, "▁hello": -0.25,
          "or": -1.25, "▁w": -2.25, "▁wor": -1.75, "ld": -3.25, "▁world": -0.75, "el": -0.1}


def llama_cpp_spm(text: str, tokens: list[str], scores: list[float]) -> list[int]:
    """llama.cpp's SentencePiece tokenization: spaces as '▁' with one prepended, then merge
    the adjacent pair whose joined token scores highest (the leftmost on ties) until none is
    a token; symbols that are no token become their UTF-8 byte tokens."""
    vocab = {token: i for i, token in enumerate(tokens)}
    symbols = list(SPACE + text.replace(" ", SPACE))
    while True:
        best = None
        for k in range(len(symbols) - 1):
            joined = symbols[k] + symbols[k + 1]
            if joined in vocab and (best is None or scores[vocab[joined]] > best[0]):
                best = (scores[vocab[joined]], k)
        if best is None:
            break
        k = best[1]
        symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
    ids = []
    for symbol in symbols:
        ids.extend([vocab[symbol]] if symbol in vocab else [vocab[f"<0x{b:02X}>"] for b in symbol.encode()])
    return ids


@pytest.fixture
def spm_file(tmp_path):
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *PIECES]
    scores = [0.0] * 259 + list(PIECES.values())
    types = [2, 3, 3] + [6] * 256 + [1] * len(PIECES)
    write_gguf(tmp_path / "spm.gguf", {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
                                       "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
                                       "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
                                       "tokenizer.ggml.unknown_token_id": 0}, {})
    return tmp_path / "spm.gguf", tokens, scores


@pytest.mark.parametrize("text", ["hello world", "hello", "he llo", "hel lo world  ", "hellö wörld", "dare",
                                  "a\nb"])
def test_sentencepiece_vocabulary_tokenizes_as_llama_cpp(spm_file, text):
    path, tokens, scores = spm_file
    tokenizer = tokenizer_from_gguf(path)
    ids = tokenizer.encode(text)
    assert ids == [1] + llama_cpp_spm(text, tokens, scores)             # BOS first, by default
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_cut_out_and_skipped(spm_file):
    tokenizer = tokenizer_from_gguf(spm_file[0])
    ids = tokenizer.encode("hello</s>")
    assert ids == [1, *llama_cpp_spm("hello", *spm_file[1:]), 2]
    assert tokenizer.decode(ids) == "hello"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<s> hello</s>"


def _byte_level_file(path, pre: str | None, merges: list[str], words: list[str]):
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + words + ["<|end|>"]
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3], "tokenizer.ggml.merges": merges,
                "tokenizer.ggml.bos_token_id": len(tokens) - 1}
    if pre is not None:
        metadata["tokenizer.ggml.pre"] = pre
    write_gguf(path, metadata, {})
    return tokens


def test_byte_level_bpe_with_gpt2_splitting(tmp_path):
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2", "3 4", "12 3", "4 5"]
    words = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "12", "34", "123", "45"]
    tokens = _byte_level_file(tmp_path / "bpe.gguf", None, merges, words)
    tokenizer = tokenizer_from_gguf(tmp_path / "bpe.gguf")
    for text, pieces in {"hello world": ["hello", "Ġworld"], "12345": ["12", "34", "5"],
                         "hello<|end|>ü": ["hello", "<|end|>", "Ã", "¼"]}.items():
        ids = tokenizer.encode(text)                                  # no BOS unless asked
        assert ids == [tokens.index(p) for p in pieces], text
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(tokenizer.encode("hello<|end|>")) == "hello"


def test_byte_level_bpe_with_llama3_splitting(tmp_path):
    merges = ["1 2", "3 4", "12 3", "4 5", "Ġ w"]
    words = ["12", "34", "123", "45", "Ġw", "Ġwhole"]                     # 'Ġwhole': no merges lead there
    tokens = _byte_level_file(tmp_path / "l3.gguf", "llama-bpe", merges, words)
    tokenizer = tokenizer_from_gguf(tmp_path / "l3.gguf")
    assert tokenizer.encode("12345") == [tokens.index(p) for p in ["123", "45"]]     # digits in threes
    assert tokenizer.encode(" whole") == [tokens.index("Ġwhole")]                     # merges skipped
    assert tokenizer.decode(tokenizer.encode("12345 whole")) == "12345 whole"


def test_unsupported_tokenizers_name_the_file(tmp_path):
    write_gguf(tmp_path / "t.gguf", {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, {})
    with pytest.raises(NotImplementedError, match=r"t\.gguf.*'bert'"):
        tokenizer_from_gguf(tmp_path / "t.gguf")
    write_gguf(tmp_path / "t.gguf", {"general.name": "no tokenizer"}, {})
    with pytest.raises(KeyError, match=r"t\.gguf.*tokenizer\.ggml\.tokens"):
        tokenizer_from_gguf(tmp_path / "t.gguf")
    write_gguf(tmp_path / "t.gguf", {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"],
                                     "tokenizer.ggml.merges": [], "tokenizer.ggml.pre": "qwen2"}, {})
    with pytest.raises(NotImplementedError, match="qwen2"):
        tokenizer_from_gguf(tmp_path / "t.gguf")
