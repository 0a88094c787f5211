"""CLIP in Hugging Face's layout: image and text features, logits, the contrastive loss and
every gradient against a PyTorch reference written with Hugging Face's names (weights moved
by load_hf_clip_state_dict), parameter counts, zero-shot classification of digits after a
few seconds of training, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table
from torch_clip_reference import CLIPModel, quick_gelu

import lamina
from helpers import assert_close, check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import data, models, optim, saving
from lamina import functional as F
from lamina.models.clip import hf_clip_table
from lamina.nn import init
from lamina.nn.activation import quick_gelu as lamina_quick_gelu
from lamina.text import BPETokenizer

TEXT = {"vocab_size": 20, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 7}
VISION = {"hidden_size": 12, "intermediate_size": 10, "num_hidden_layers": 2, "num_attention_heads": 3,
          "image_size": 8, "patch_size": 4, "num_channels": 2}
PROJECTION = 6


def _pair(seed: int = 0):
    reference = CLIPModel(TEXT, VISION, PROJECTION, seed=seed).double()
    model = models.CLIP(TEXT, VISION, PROJECTION)
    models.load_hf_clip_state_dict(model, reference.state_dict())
    return model, reference


def _inputs(n: int = 3, seed: int = 0):
    """NHWC images, ids whose highest id ends each text (then padding), and the attention mask."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, VISION["image_size"], VISION["image_size"], VISION["num_channels"]))
    eos = TEXT["vocab_size"] - 1
    ids = rng.integers(1, eos, size=(n, 6))
    mask = np.ones_like(ids)
    for row, length in enumerate((6, 4, 3)[:n]):
        ids[row, length - 1] = eos
        ids[row, length:], mask[row, length:] = 0, 0
    return images, ids, mask


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(images.transpose(0, 3, 1, 2))


def test_features_logits_loss_and_every_gradient_equal_the_reference(f64):
    model, reference = _pair()
    images, ids, mask = _inputs()
    pixels = lamina.tensor(images, requires_grad=True)
    theirs_pixels = _nchw(images).requires_grad_(True)
    out = model(pixels, ids, mask, return_loss=True)
    logits_per_image, logits_per_text, loss = reference(theirs_pixels, torch.tensor(ids), torch.tensor(mask))
    assert_close(model.get_image_features(images).numpy(),
                 reference.get_image_features(_nchw(images)).detach().numpy(), 1e-10, "image features")
    assert_close(model.get_text_features(ids, mask).numpy(),
                 reference.get_text_features(torch.tensor(ids), torch.tensor(mask)).detach().numpy(), 1e-10,
                 "text features")
    assert_close(out.logits_per_image.numpy(), logits_per_image.detach().numpy(), 1e-10, "logits_per_image")
    assert_close(out.logits_per_text.numpy(), logits_per_text.detach().numpy(), 1e-10, "logits_per_text")
    assert_close(out.loss.numpy(), loss.detach().numpy(), 1e-10, "loss")

    upstream = randn(*logits_per_image.shape, seed=1)
    F.add(out.loss, F.sum(F.mul(out.logits_per_image, lamina.tensor(upstream)))).backward()
    (loss + (logits_per_image * torch.tensor(upstream)).sum()).backward()
    assert_close(pixels.grad, theirs_pixels.grad.numpy().transpose(0, 2, 3, 1), 1e-9, "gradient of the images")
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_clip_table(model), grads, every_parameter=True)


def test_hidden_act_gelu_in_both_towers_equals_the_reference(f64):
    text, vision = {**TEXT, "hidden_act": "gelu"}, {**VISION, "hidden_act": "gelu"}
    reference = CLIPModel(text, vision, PROJECTION, seed=3).double()
    model = models.CLIP(text, vision, PROJECTION)
    models.load_hf_clip_state_dict(model, reference.state_dict())
    assert model.text_model.layers[0].linear1.get_config()["activation"] == "gelu"
    images, ids, mask = _inputs()
    pixels = lamina.tensor(images, requires_grad=True)
    theirs_pixels = _nchw(images).requires_grad_(True)
    out = model(pixels, ids, mask, return_loss=True)
    _, _, loss = reference(theirs_pixels, torch.tensor(ids), torch.tensor(mask))
    assert_close(out.loss.numpy(), loss.detach().numpy(), 1e-10, "loss")
    out.loss.backward()
    loss.backward()
    assert_close(pixels.grad, theirs_pixels.grad.numpy().transpose(0, 2, 3, 1), 1e-9, "gradient of the images")
    quick = models.CLIP(TEXT, VISION, PROJECTION)
    models.load_hf_clip_state_dict(quick, reference.state_dict())
    assert not np.allclose(quick(images, ids, mask).logits_per_image.numpy(), out.logits_per_image.numpy())
    assert models.clip("tiny", text_config={"hidden_act": "gelu"}).get_config()["text_config"]["hidden_act"] == "gelu"
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        models.CLIP(vision_config={"hidden_act": "relu"})


def _openai_names(hf: dict) -> dict:
    """A Hugging Face CLIP state dict under OpenAI's names (the ``clip`` package's ViT models)."""
    renames = (("text_model.embeddings.token_embedding.", "token_embedding."),
               ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
               ("text_model.final_layer_norm.", "ln_final."), ("text_model.encoder.layers.", "transformer.resblocks."),
               ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
               ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
               ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
               ("vision_model.pre_layrnorm.", "visual.ln_pre."), ("vision_model.post_layernorm.", "visual.ln_post."),
               ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
               ("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
               ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))
    out = {"text_projection": hf["text_projection.weight"].T, "visual.proj": hf["visual_projection.weight"].T,
           "logit_scale": hf["logit_scale"]}
    for key, value in hf.items():
        if key.endswith("position_ids") or key in ("text_projection.weight", "visual_projection.weight",
                                                   "logit_scale"):
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    for prefix in [k.rsplit(".self_attn.", 1)[0] for k in out if ".self_attn.q_proj.weight" in k]:
        for part in ("weight", "bias"):
            out[f"{prefix}.attn.in_proj_{part}"] = torch.cat(
                [out.pop(f"{prefix}.self_attn.{p}_proj.{part}") for p in "qkv"])
    return out


def test_openai_vit_checkpoint_names_load_as_the_hugging_face_ones(f64):
    model, reference = _pair(4)
    openai = _openai_names(reference.state_dict())
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in openai and "visual.proj" in openai
    again = models.CLIP(TEXT, VISION, PROJECTION)
    models.load_openai_clip_state_dict(again, openai)
    for key, value in model.state_dict().items():
        assert np.array_equal(np.asarray(again.state_dict()[key]), np.asarray(value)), key
    images, ids, _ = _inputs()
    assert_close(again(images, ids).logits_per_image.numpy(), model(images, ids).logits_per_image.numpy(), 0.0,
                 "logits")


def test_padding_does_not_change_the_text_features(f64):
    model, _ = _pair(1)
    _, ids, mask = _inputs()
    full = model.get_text_features(ids, mask).numpy()
    shorter = model.get_text_features(ids[1:2, :4], mask[1:2, :4]).numpy()
    assert_close(shorter[0], full[1], 1e-10, "text features without the padding")


def test_eos_token_id_pools_at_its_first_position(f64):
    model = models.CLIP({**TEXT, "eos_token_id": 3}, VISION, PROJECTION)
    model.build()
    ids = np.array([[5, 9, 3, 3, 17], [3, 19, 2, 1, 0]])
    hidden, pooled = model.text_model(ids)
    assert_close(pooled.numpy(), hidden.numpy()[[0, 1], [2, 0]], 0.0, "pooled states")
    with pytest.raises(ValueError, match="no end-of-text token 3"):
        model.text_model(np.array([[5, 9, 4]]))


def test_model_gradients_by_finite_differences(f64):
    model, _ = _pair(2)
    images, ids, mask = _inputs(2)
    assert check_gradients(lambda x: model(x, ids, mask, return_loss=True).loss, images)


def test_quick_gelu_against_torch_with_second_derivatives():
    x = randn(3, 5, scale=2.0)
    compare_with_torch(lamina_quick_gelu, quick_gelu, x, dtype=np.float64)
    compare_double_backward_with_torch(lamina_quick_gelu, quick_gelu, x)
    assert check_gradients(lamina_quick_gelu, x)


def test_parameter_counts_of_the_published_models():
    expected = {"vit_b_32": 151_277_313, "vit_b_16": 149_620_737, "vit_l_14": 427_616_513}
    for config, count in expected.items():
        assert models.clip_parameter_count(config) == count, config
    with init.meta():            # shape-only weights: the full model costs no memory
        model = models.clip("vit_b_32")
        model.build()
    assert model.num_parameters() == expected["vit_b_32"]
    tiny = models.clip("tiny")
    tiny.build()
    assert tiny.num_parameters() == models.clip_parameter_count("tiny")
    assert float(tiny.logit_scale.numpy()) == pytest.approx(np.log(1 / 0.07), rel=1e-6)
    assert models.get_model("clip", config="tiny").get_config() == tiny.get_config()


def test_a_tiny_clip_trained_on_digit_captions_classifies_held_out_digits_zero_shot():
    lamina.manual_seed(0)
    x, y = data.load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, held_out = order[:1400], order[1400:]
    captions = [f"a photo of the digit {k}" for k in range(10)]
    tokenizer = BPETokenizer.train(captions, vocab_size=280, pad="<pad>", eos="<eos>")
    model = models.clip("tiny", text_config={"vocab_size": len(tokenizer), "max_position_embeddings": 12},
                        vision_config={"image_size": 8, "patch_size": 2, "num_channels": 1})
    ids, mask = models.clip_tokenize(tokenizer, captions, 12)
    optimizer = optim.Adam(model, lr=3e-3)
    by_class = [train[y[train] == k] for k in range(10)]
    for _ in range(300):        # each batch pairs one image of every digit with the ten captions
        pick = np.array([rng.choice(rows) for rows in by_class])
        loss = model(x[pick], ids, mask, return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier = models.zero_shot_classifier(model, tokenizer, [str(k) for k in range(10)],
                                             templates=("a photo of the digit {}",))
    probabilities = classifier(x[held_out])
    assert probabilities.shape == (len(held_out), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (classifier.predict(x[held_out]) == y[held_out]).mean()
    assert accuracy > 0.4, accuracy          # chance is 0.1; 0.60 with these seeds


def test_template_embeddings_are_averaged_and_normalised():
    lamina.manual_seed(1)
    tokenizer = BPETokenizer.train(["a b c"], vocab_size=260, pad="<pad>", eos="<eos>")
    model = models.clip("tiny", text_config={"vocab_size": len(tokenizer)})
    templates = ("a {}", "the {} here")
    classifier = models.zero_shot_classifier(model, tokenizer, ["cat", "dog"], templates)
    for k, name in enumerate(("cat", "dog")):
        ids, mask = models.clip_tokenize(tokenizer, [t.format(name) for t in templates], 16)
        each = F.normalize(model.get_text_features(ids, mask), axis=-1).numpy()
        mean = each.mean(axis=0)
        assert_close(classifier.class_embeddings[k], mean / np.linalg.norm(mean), 1e-5, name)


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.clip("tiny")
    images, ids = np.random.default_rng(0).random((2, 16, 16, 3)), np.array([[1, 5, 299], [2, 299, 0]])
    expected = model(images, ids).logits_per_image.numpy()
    saving.save(model, tmp_path / "clip.lamina")
    loaded = saving.load(tmp_path / "clip.lamina")
    assert isinstance(loaded, models.CLIP) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(images, ids).logits_per_image.numpy(), expected)


def test_registered_as_a_multimodal_model():
    assert models.list_models(module="multimodal") == ["clip", "clip_resnet"]
    with pytest.raises(ValueError, match="load_hf_clip_state_dict"):
        models.get_model("clip", weights="DEFAULT")


def test_clip_tokenize_frames_cuts_and_pads():
    tokenizer = BPETokenizer.train(["hello world"], vocab_size=262, pad="<pad>", bos="<bos>", eos="<eos>")
    ids, mask = models.clip_tokenize(tokenizer, ["hello world", "hi"], context_length=4)
    bos, eos, pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
    assert ids.shape == (2, 4) and ids[0, 0] == bos and ids[0, -1] == eos
    assert list(mask[1]) == [1] * (len(tokenizer.encode("hi")) + 2) + [0] * (2 - len(tokenizer.encode("hi")))
    assert (ids[1][mask[1] == 0] == pad).all()


def test_errors():
    model = models.clip("tiny")
    images = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="config must be one of"):
        models.clip("vit_z")
    with pytest.raises(ValueError, match="unknown keys \\['heads'\\]"):
        models.CLIP(text_config={"heads": 2})
    with pytest.raises(ValueError, match="not divisible"):
        models.CLIP(vision_config={"hidden_size": 10, "num_attention_heads": 3})
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        models.CLIP(vision_config={"image_size": 30})
    with pytest.raises(lamina.ShapeError, match=r"NHWC images \(batch, 16, 16, 3\), got shape \(2, 3, 16, 16\)"):
        model.get_image_features(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(lamina.ShapeError, match="more than max_position_embeddings=16"):
        model.get_text_features(np.ones((1, 17), np.int64))
    with pytest.raises(lamina.ShapeError, match="integer token ids"):
        model.get_text_features(np.ones((1, 3), np.float32))
    with pytest.raises(lamina.ShapeError, match="as many texts as images"):
        model(images, np.ones((3, 4), np.int64), return_loss=True)
    with pytest.raises(TypeError, match="expected a CLIP model"):
        models.load_hf_clip_state_dict(models.gpt2("small", n_layer=1, n_embd=8, n_head=2), {})
    state = {key: value for key, value in CLIPModel(TEXT, VISION, PROJECTION).state_dict().items()
             if key != "logit_scale"}
    with pytest.raises(KeyError, match="missing keys \\['logit_scale'\\]"):
        models.load_hf_clip_state_dict(models.CLIP(TEXT, VISION, PROJECTION), state)
    state = CLIPModel(TEXT, VISION, PROJECTION).state_dict()
    with pytest.raises(lamina.ShapeError):
        models.load_hf_clip_state_dict(models.CLIP(TEXT, {**VISION, "hidden_size": 6}, PROJECTION), state)
    tokenizer = BPETokenizer.train(["a b"], vocab_size=258, pad="<pad>", eos=None)
    with pytest.raises(ValueError, match="no eos token"):
        models.zero_shot_classifier(model, tokenizer, ["cat"])
    with pytest.raises(ValueError, match="'\\{\\}'"):
        models.zero_shot_classifier(model, tokenizer, ["cat"], templates=("a photo",))
    with pytest.raises(TypeError, match="expected a CLIP model"):
        models.zero_shot_classifier(object(), tokenizer, ["cat"])
