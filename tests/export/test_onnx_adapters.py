"""ONNX export of the parameter-efficient adapters (DoRA, IA3, LoHa, LoKr, VeRA, bottleneck
adapters, prompt tuning), of IA3 vectors on attention layers and of the quantized Dense: ONNX
Runtime gives lamina's evaluation outputs for two batch sizes, the export leaves every weight as
it was, and prefix tuning is refused with the layer named."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FEATURES, STEPS = 6, 4


def _jiggle(model: nn.Module, seed: int = 1, size: float = 0.3) -> nn.Module:
    """Move every parameter off its initial value (zero up-projections and unit vectors would
    hide an adapter the export leaves out)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + size * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model


def _weights(model: nn.Module) -> dict:
    return {name: np.array(value, copy=True) for name, value in model.state_dict().items()}


def _outputs(model: nn.Module, tmp_path, input_shape, batches=(1, 3), ids: int | None = None):
    """(ONNX Runtime's outputs, lamina's) for random inputs of each batch size, after checking
    that the export changed none of the model's weights."""
    before = _weights(model)
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=input_shape)
    after = _weights(model)
    assert before.keys() == after.keys()
    for name in before:
        assert np.array_equal(before[name], after[name]), f"the export changed {name}"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pairs = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        if ids is None:
            x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        else:
            x = rng.integers(0, ids, (batch, *input_shape)).astype(np.int64)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        (got,) = session.run(None, {"input": x})
        pairs.append((got, expected))
    return pairs


def _check(model: nn.Module, tmp_path, input_shape, what: str, rtol: float = 1e-5, **options) -> None:
    for got, expected in _outputs(model, tmp_path, input_shape, **options):
        assert_close(got, expected, rtol=rtol, what=what)


def _dense_model(activation="tanh") -> nn.Sequential:
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation=activation), nn.Dense(5))
    model(lamina.tensor(np.zeros((1, STEPS, FEATURES), dtype=np.float32)))
    return model


MERGEABLE = (nn.DoRADense, nn.IA3Dense, nn.LoHaDense, nn.LoKrDense, nn.VeRADense)
ADAPTERS = {
    "dora": lambda m: nn.apply_dora(m, r=2, alpha=4.0),
    "ia3_output": lambda m: nn.apply_ia3(m, target=nn.Dense),
    "ia3_feedforward": lambda m: nn.apply_ia3(m, target=nn.Dense, feedforward=nn.Dense),
    "loha": lambda m: nn.apply_loha(m, r=2, alpha=3.0),
    "lokr": lambda m: nn.apply_lokr(m, r=1, alpha=2.0),
    "vera": lambda m: nn.apply_vera(m, r=2),
}


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_adapted_dense_layers_export_as_their_effective_weight(name, merged, tmp_path):
    model = _jiggle(ADAPTERS[name](_dense_model()).eval())
    if merged:
        for layer in model.modules():
            if isinstance(layer, MERGEABLE):
                layer.merge()
    _check(model, tmp_path, (STEPS, FEATURES), name)


def test_an_ia3_scale_layer_exports(tmp_path):
    layer = _jiggle(nn.IA3Scale(FEATURES))
    _check(nn.Sequential(layer), tmp_path, (STEPS, FEATURES), "IA3Scale")


def _encoder(**options) -> nn.Sequential:
    lamina.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, **options))
    model(lamina.tensor(np.zeros((1, STEPS, 8), dtype=np.float32)))
    return model


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_bottleneck_adapters_in_an_encoder_layer_export(placement, tmp_path):
    model = nn.apply_bottleneck_adapters(_encoder(norm_first=True), bottleneck=3, placement=placement,
                                         activation="gelu")
    _check(_jiggle(model, size=0.1).eval(), tmp_path, (STEPS, 8), placement, rtol=1e-4)


def _attention(use_bias: bool = True) -> nn.Sequential:
    lamina.manual_seed(0)
    model = nn.Sequential(nn.MultiHeadAttention(8, 2, use_bias=use_bias, bias_init="normal"))
    model(lamina.tensor(np.zeros((1, STEPS, 8), dtype=np.float32)))
    return model


def _scale_vectors(model: nn.Module) -> None:
    rng = np.random.default_rng(5)
    for layer in model.modules():
        if isinstance(layer, nn.IA3Scale):
            layer.scaling.data = (1.0 + 0.8 * rng.standard_normal(layer.scaling.shape)).astype(np.float32)


@pytest.mark.parametrize("use_bias", [True, False])
def test_ia3_vectors_of_an_attention_layer_scale_the_exported_projections(use_bias, tmp_path):
    model = nn.apply_ia3(_attention(use_bias), attention_parts=("q", "k", "v")).eval()
    _scale_vectors(model)
    x = np.random.default_rng(0).standard_normal((2, STEPS, 8)).astype(np.float32)
    with lamina.no_grad():
        scaled = model(lamina.tensor(x)).numpy()
        unscaled = _attention(use_bias).eval()(lamina.tensor(x)).numpy()
    assert np.abs(scaled - unscaled).max() > 1e-2
    pairs = _outputs(model, tmp_path, (STEPS, 8))
    for got, expected in pairs:
        assert_close(got, expected, rtol=1e-5, what="IA3 attention")
    path = tmp_path / "model.onnx"
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert np.abs(got - unscaled).max() > 1e-2
    assert_close(got, scaled, rtol=1e-5, what="IA3 attention")


def test_merged_ia3_vectors_of_an_attention_layer_are_not_applied_twice(tmp_path):
    model = nn.apply_ia3(_attention(), attention_parts=("q", "v")).eval()
    _scale_vectors(model)
    nn.merge_adapters(model)
    _check(model, tmp_path, (STEPS, 8), "merged IA3 attention")


def test_ia3_with_lora_on_one_projection_scales_the_lora_sum(tmp_path):
    model = nn.apply_lora(_attention(), r=2, target=nn.MultiHeadAttention, attention_parts=("v",))
    model = nn.apply_ia3(model, attention_parts=("v",))
    _jiggle(model, size=0.2)
    _scale_vectors(model)
    _check(model.eval(), tmp_path, (STEPS, 8), "LoRA and IA3")


def test_ia3_in_a_gpt2_block_exports(tmp_path):
    lamina.manual_seed(0)
    gpt2 = models.GPT2(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    gpt2(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))
    gpt2 = nn.apply_ia3(gpt2, target=(nn.MultiHeadAttention, "linear2"), feedforward="linear2")
    _jiggle(gpt2, size=0.1)
    _scale_vectors(gpt2)
    _check(gpt2.eval(), tmp_path, (5,), "GPT-2 with IA3", rtol=1e-4, ids=11)


def _gpt2():
    lamina.manual_seed(0)
    gpt2 = models.GPT2(vocab_size=11, n_positions=12, n_embd=8, n_layer=2, n_head=2)
    gpt2(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))
    return _jiggle(gpt2, size=0.1)


@pytest.mark.parametrize("encoder", [None, "mlp"])
def test_prompt_tuning_of_gpt2_exports_for_any_length(encoder, tmp_path):
    lamina.manual_seed(2)
    lm = nn.PromptTuningLM(_gpt2(), num_virtual_tokens=3, prompt_encoder=encoder).eval()
    _check(lm, tmp_path, (5,), "prompt tuning", rtol=1e-4, ids=11)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for steps in (1, 9):                           # 3 virtual tokens and 9 steps fill the 12 positions
        ids = np.random.default_rng(steps).integers(0, 11, (2, steps)).astype(np.int64)
        with lamina.no_grad():
            expected = lm(lamina.tensor(ids)).numpy()
        (got,) = session.run(None, {"input": ids})
        assert_close(got, expected, rtol=1e-4, what=f"prompt tuning, {steps} steps")


def test_prompt_tuning_of_a_llama_is_refused_naming_the_layer(tmp_path):
    lamina.manual_seed(0)
    llama = models.Llama(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                         num_attention_heads=2)
    llama(lamina.tensor(np.zeros((1, 4), dtype=np.int64)))
    lm = nn.PromptTuningLM(llama, num_virtual_tokens=2, name="prompted")
    with pytest.raises(NotImplementedError, match="prompted.*GPT-2-style"):
        export_onnx(lm, tmp_path / "model.onnx", input_shape=(4,))


def test_prefix_tuning_is_refused_naming_the_layer(tmp_path):
    lm = nn.PrefixTuningLM(_gpt2(), num_virtual_tokens=2).eval()
    with pytest.raises(NotImplementedError, match="PrefixTuningLM"):
        export_onnx(lm, tmp_path / "model.onnx", input_shape=(5,))


def test_an_attention_layer_with_a_prefix_attached_is_refused(tmp_path):
    model = _attention()
    attention = model.layers[0]
    prefix = lamina.tensor(np.zeros((1, 2, 3, 4), dtype=np.float32))
    attention.__dict__["prefix_keys_values"] = (prefix, prefix)
    with pytest.raises(NotImplementedError, match=attention._label()):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(STEPS, 8))


@pytest.mark.parametrize("options", [{"add_bias_kv": True}, {"add_zero_attn": True}, {"kdim": 6}])
def test_attention_options_the_export_does_not_write_are_refused(options, tmp_path):
    attention = nn.MultiHeadAttention(8, 2, **options)
    model = nn.Sequential(attention)
    model.build((2, STEPS, 8))
    with pytest.raises(NotImplementedError, match=attention._label()):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(STEPS, 8))


@pytest.mark.parametrize("input_scale", [False, True])
def test_a_quantized_dense_exports_its_dequantized_weight(input_scale, tmp_path):
    dense = _jiggle(_dense_model("relu")).layers[0]
    scale = np.linspace(0.5, 2.0, FEATURES).astype(np.float32) if input_scale else None
    layer = nn.QuantDense.from_dense(dense, bits=4, group_size=FEATURES // 2, input_scale=scale)
    _check(nn.Sequential(layer), tmp_path, (STEPS, FEATURES), "QuantDense")


def test_a_round_to_nearest_quantized_encoder_layer_exports(tmp_path):
    """rtn_quantize makes the Dense layers QuantDense and the attention's projections packed
    integers (QuantMultiHeadAttention): both export as their dequantized weights."""
    model = nn.ptq.rtn_quantize(_jiggle(_encoder(), size=0.1), bits=3, group_size=4).eval()
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"QuantDense", "QuantMultiHeadAttention"} <= kinds
    _check(model, tmp_path, (STEPS, 8), "quantized encoder layer", rtol=1e-4)
