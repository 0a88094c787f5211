"""ONNX export of CLIP's towers: the image graph (ViT and ResNet towers) and the text graph
give in ONNX Runtime the embeddings lamina gives, for any batch size (and text length)."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models
from lamina.export import export_clip_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TEXT = {"vocab_size": 30, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 9}
MODELS = {
    "vit": lambda: models.CLIP(TEXT, {"hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 2,
                                      "num_attention_heads": 3, "image_size": 12, "patch_size": 4,
                                      "num_channels": 2}, 8),
    "vit_gelu_eos": lambda: models.CLIP({**TEXT, "hidden_act": "gelu", "eos_token_id": 2},
                                        {"hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "image_size": 8, "patch_size": 2,
                                         "hidden_act": "gelu"}, 8),
    "resnet": lambda: models.ResNetCLIP(TEXT, {"layers": (1, 2, 1, 1), "width": 4, "heads": 2, "image_size": 64},
                                        8),
}


def _model(name):
    lamina.manual_seed(0)
    model = MODELS[name]()
    model.build()
    rng = np.random.default_rng(1)
    for p in model.parameters():        # no unit scales or zero biases to hide a dropped term
        p.data = (p.data + 0.2 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    for key, buffer in model.named_buffers():
        if key.endswith("running_var"):
            buffer[...] = 1.0 + rng.random(buffer.shape)
        elif key.endswith("running_mean"):
            buffer[...] = 0.1 * rng.standard_normal(buffer.shape)
    return model.eval()


def _ids(batch: int, steps: int, seed: int, eos: int | None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, TEXT["vocab_size"] - 1, size=(batch, steps))
    for row in range(batch):
        end = rng.integers(1, steps + 1)
        ids[row, end - 1] = TEXT["vocab_size"] - 1 if eos is None else eos
        ids[row, end:] = 0
    return ids.astype(np.int64)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_both_towers_run_the_same_in_onnx_runtime_for_any_batch(name, tmp_path):
    model = _model(name)
    image_path, text_path = export_clip_onnx(model, tmp_path / "image.onnx", tmp_path / "text.onnx")
    image_graph = onnx.load(str(image_path)).graph
    assert [d.dim_param or d.dim_value for d in image_graph.input[0].type.tensor_type.shape.dim][0] == "batch"
    text_dims = [d.dim_param for d in onnx.load(str(text_path)).graph.input[0].type.tensor_type.shape.dim]
    assert text_dims == ["batch", "sequence"]
    images_session = ort.InferenceSession(str(image_path), providers=["CPUExecutionProvider"])
    text_session = ort.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
    v = model.vision_config
    eos = model.text_config["eos_token_id"]
    for seed, (batch, steps) in enumerate(((2, 9), (1, 4), (3, 6))):
        images = np.random.default_rng(seed).standard_normal(
            (batch, v["image_size"], v["image_size"], v["num_channels"])).astype(np.float32)
        ids = _ids(batch, steps, seed, eos)
        with lamina.no_grad():
            image_embeds = model.get_image_features(images).numpy()
            text_embeds = model.get_text_features(ids).numpy()
        (ours_image,) = images_session.run(None, {"pixel_values": images})
        (ours_text,) = text_session.run(None, {"input_ids": ids})
        assert ours_image.shape == (batch, 8) and ours_text.shape == (batch, 8)
        assert_close(ours_image, image_embeds, 1e-4, f"image embeddings, batch {batch}")
        assert_close(ours_text, text_embeds, 1e-4, f"text embeddings, batch {batch} x {steps}")


def test_one_tower_alone_and_errors(tmp_path):
    model = _model("resnet")
    image_path, text_path = export_clip_onnx(model, image_path=tmp_path / "image.onnx")
    assert image_path.exists() and text_path is None
    with pytest.raises(ValueError, match="give image_path, text_path or both"):
        export_clip_onnx(model)
    with pytest.raises(TypeError, match="expected a CLIP model"):
        export_clip_onnx(models.gpt2("small", n_layer=1, n_embd=8, n_head=2), tmp_path / "x.onnx")
