"""Llama from GGUF files: a Hugging Face-layout model converted as llama.cpp's
convert_hf_to_gguf.py does (its q/k row permutation, its metadata) loads with the reference's
logits; lamina's own GGUF export reloads exactly (F32) or closely (Q8_0); the loader's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_llama_reference import LlamaForCausalLM

from helpers import assert_close
from lamina import models
from lamina.io.gguf import GGUFValue, GGUFValueType, read_gguf, write_gguf
from lamina.io.gguf_quants import GGMLType
from lamina.models.llama_gguf import (
    deinterleave_rotary_rows,
    interleave_rotary_rows,
    llama_config_from_gguf,
    load_gguf_llama,
    save_gguf_llama,
)

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 500.0,
        "max_position_embeddings": 64}
LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def converter_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (k_proj uses the key/value head count)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def convert_hf(state_dict: dict, config: dict) -> tuple[dict, dict]:
    """(metadata, tensors) as llama.cpp's converter writes a LlamaForCausalLM (float64 kept)."""
    u32 = GGUFValueType.UINT32
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    metadata = {"general.architecture": "llama", "general.name": "tiny",
                "llama.context_length": GGUFValue(config["max_position_embeddings"], u32),
                "llama.embedding_length": GGUFValue(config["hidden_size"], u32),
                "llama.block_count": GGUFValue(config["num_hidden_layers"], u32),
                "llama.feed_forward_length": GGUFValue(config["intermediate_size"], u32),
                "llama.rope.dimension_count": GGUFValue(config["hidden_size"] // heads, u32),
                "llama.attention.head_count": GGUFValue(heads, u32),
                "llama.attention.head_count_kv": GGUFValue(kv_heads, u32),
                "llama.rope.freq_base": GGUFValue(config["rope_theta"], GGUFValueType.FLOAT32),
                "llama.attention.layer_norm_rms_epsilon": GGUFValue(config["rms_norm_eps"], GGUFValueType.FLOAT32),
                "llama.vocab_size": GGUFValue(config["vocab_size"], u32)}
    tensors = {}
    for key, value in state_dict.items():
        array = value.detach().numpy()
        name = key.removeprefix("model.")
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            array = converter_permute(array, heads, heads)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            array = converter_permute(array, heads, kv_heads)
        if name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            name = f"blk.{index}.{LAYER[module]}.{kind}"
        else:
            name = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
                    "lm_head.weight": "output.weight"}[name]
        tensors[name] = array
    if config.get("tie_word_embeddings"):
        del tensors["output.weight"]
    return metadata, tensors


@pytest.mark.parametrize("options", [{}, {"tie_word_embeddings": True, "attention_bias": True,
                                          "num_key_value_heads": 1}])
def test_a_converted_hugging_face_model_gives_its_logits(f64, tmp_path, options):
    config = {**TINY, **options}
    torch.manual_seed(0)
    reference = LlamaForCausalLM(config).double()
    metadata, tensors = convert_hf(reference.state_dict(), config)
    write_gguf(tmp_path / "tiny.gguf", metadata, tensors)           # float64 tensors: stored as F64
    model = load_gguf_llama(tmp_path / "tiny.gguf")
    assert model.get_config()["num_key_value_heads"] == config["num_key_value_heads"]
    assert model.tie_word_embeddings == bool(options.get("tie_word_embeddings"))
    assert model.rms_norm_eps == config["rms_norm_eps"] and model.rope_theta == config["rope_theta"]
    ids = np.random.default_rng(0).integers(0, config["vocab_size"], size=(2, 7))
    ours = model(ids).numpy()
    assert_close(ours, reference(torch.tensor(ids)).detach().numpy(), 1e-10, "logits")
    direct = models.Llama(**config)
    models.load_hf_llama_state_dict(direct, reference.state_dict())
    np.testing.assert_array_equal(ours, direct(ids).numpy())         # the permutation undone exactly


def test_the_rotary_row_permutation_is_the_converters_and_is_undone():
    w = np.arange(2 * 8 * 3).reshape(16, 3)
    np.testing.assert_array_equal(interleave_rotary_rows(w, 2), converter_permute(w, 2))
    np.testing.assert_array_equal(deinterleave_rotary_rows(interleave_rotary_rows(w, 2), 2), w)
    # within a head of 8 rows, rows 0..3 pair with 4..7 (rotate half) and become neighbours
    np.testing.assert_array_equal(interleave_rotary_rows(np.arange(8), 1), [0, 4, 1, 5, 2, 6, 3, 7])


def _tiny_model(**options):
    config = {"vocab_size": 40, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
              "rms_norm_eps": 1e-5, **options}
    model = models.Llama(**config)
    model.build((None, 1))
    return model


@pytest.mark.parametrize("options", [{}, {"tie_word_embeddings": True, "mlp_bias": True, "head_dim": 8},
                                     {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}])
def test_an_exported_model_reloads_exactly_in_f32_and_closely_in_q8_0(tmp_path, options):
    model = _tiny_model(**options)
    ids = np.random.default_rng(1).integers(0, 40, size=(2, 9))
    expected = model(ids).numpy()
    save_gguf_llama(model, tmp_path / "f32.gguf")
    reloaded = load_gguf_llama(tmp_path / "f32.gguf")
    assert {k: v for k, v in reloaded.get_config().items() if k != "name"} == {
        k: v for k, v in model.get_config().items() if k != "name"}
    np.testing.assert_array_equal(reloaded(ids).numpy(), expected)

    save_gguf_llama(model, tmp_path / "q8.gguf", "Q8_0")
    file = read_gguf(tmp_path / "q8.gguf")
    assert file.tensors["blk.0.attn_q.weight"].type == GGMLType.Q8_0
    assert file.tensors["blk.0.attn_norm.weight"].type == GGMLType.F32
    quantized = load_gguf_llama(file)(ids).numpy()
    error = np.abs(quantized - expected).max() / np.abs(expected).max()
    assert 0 < error < 0.03


def test_llama3_rope_frequencies_are_recognised(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    model = _tiny_model(head_dim=32, max_position_embeddings=2**17, rope_theta=500000.0, rope_scaling=scaling)
    save_gguf_llama(model, tmp_path / "l3.gguf")
    assert "rope_freqs.weight" in read_gguf(tmp_path / "l3.gguf").tensors
    assert llama_config_from_gguf(tmp_path / "l3.gguf")["rope_scaling"] == scaling
    other = _tiny_model(rope_scaling={**scaling, "original_max_position_embeddings": 64})
    save_gguf_llama(other, tmp_path / "other.gguf")          # unfamiliar divisors: kept as they are
    reloaded = load_gguf_llama(tmp_path / "other.gguf")
    assert reloaded.rope_scaling["rope_type"] == "longrope"
    ids = np.arange(12).reshape(1, 12)
    assert_close(reloaded(ids).numpy(), other(ids).numpy(), 1e-5, "logits")


def test_loader_errors_name_the_file_and_key(tmp_path):
    save_gguf_llama(_tiny_model(), tmp_path / "good.gguf")
    good = read_gguf(tmp_path / "good.gguf")
    tensors = {name: good.tensor(name) for name in good.tensors}

    def rewritten(metadata, arrays=tensors):
        write_gguf(tmp_path / "bad.gguf", metadata, arrays)
        return tmp_path / "bad.gguf"

    for key in ("llama.block_count", "llama.attention.head_count", "llama.attention.layer_norm_rms_epsilon"):
        fields = {k: v for k, v in good.fields.items() if k != key}
        with pytest.raises(KeyError, match=rf"bad\.gguf.*{key}"):
            load_gguf_llama(rewritten(fields))
    with pytest.raises(ValueError, match="general.architecture is 'gpt2'"):
        load_gguf_llama(rewritten({**good.fields, "general.architecture": "gpt2"}))
    with pytest.raises(ValueError, match="vocab_size 41"):
        load_gguf_llama(rewritten({**good.fields, "llama.vocab_size": 41}))
    fewer = {k: v for k, v in tensors.items() if k != "blk.1.ffn_up.weight"}
    with pytest.raises(KeyError, match=r"bad\.gguf.*missing tensors \['blk\.1\.ffn_up\.weight'\]"):
        load_gguf_llama(rewritten(good.fields, fewer))
    with pytest.raises(KeyError, match="unexpected tensors.*'extra'"):
        load_gguf_llama(rewritten(good.fields, {**tensors, "extra": np.zeros(3, np.float32)}))
