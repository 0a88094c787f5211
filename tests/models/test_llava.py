"""LLaVA: image tokens spliced into a decoder LM's input embeddings, the answer-only loss, the
two training stages, cached generation, saving, and learning a toy visual question set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import models, nn
from lamina.autograd import tensor
from lamina.io import load_file, save_file

IMAGE = 1


def _lm(vocab: int = 12, hidden: int = 16, layers: int = 2, std: float = 0.02) -> models.Llama:
    return models.Llama(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=64,
                        initializer_range=std)


def _vit(depth: int = 2) -> models.VisionTransformer:
    return models.vit(8, 4, num_classes=2, d_model=8, depth=depth, num_heads=2, mlp_dim=16, channels=3)


def _images(m: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(m, 8, 8, 3)).astype(np.float32)


# -- splicing ------------------------------------------------------------------------------
def _reference_splice(text, ids, images, mask, side):
    """A plain NumPy splice: walk each row's real tokens, expanding placeholders."""
    rows, sources, k = [], [], 0
    for n in range(len(ids)):
        row, src = [], []
        for t in range(ids.shape[1]):
            if not mask[n, t]:
                continue
            if ids[n, t] == IMAGE:
                row += list(images[k])
                src += [-1] * len(images[k])
                k += 1
            else:
                row.append(text[n, t])
                src.append(n * ids.shape[1] + t)
        rows.append(row)
        sources.append(src)
    length = max(map(len, rows))
    out = np.zeros((len(ids), length, text.shape[-1]))
    keep = np.zeros((len(ids), length), dtype=bool)
    source = np.full((len(ids), length), -1)
    for n, (row, src) in enumerate(zip(rows, sources)):
        start = 0 if side == "right" else length - len(row)
        out[n, start:start + len(row)] = row
        keep[n, start:start + len(row)] = True
        source[n, start:start + len(row)] = src
    return out, keep, source


@pytest.mark.parametrize("side", ["right", "left"])
def test_splice_matches_a_numpy_reference_with_several_images_and_padding(side, f64):
    rng = np.random.default_rng(0)
    ids = np.array([[7, IMAGE, 3, 4, IMAGE], [0, 0, 5, IMAGE, 6], [2, 3, 4, 5, 6]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    text, images = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 2, 4))
    spliced = models.splice_image_tokens(tensor(text), ids, tensor(images), IMAGE, mask, padding_side=side)
    expected, keep, source = _reference_splice(text, ids, images, mask, side)
    np.testing.assert_array_equal(spliced.embeddings.numpy(), expected)
    np.testing.assert_array_equal(spliced.mask, keep)
    np.testing.assert_array_equal(spliced.source, source)
    np.testing.assert_array_equal(spliced.position_ids, np.where(keep, np.cumsum(keep, 1) - 1, 0))
    assert spliced.embeddings.shape == (3, 7, 4)       # row 0: 5 - 2 + 2 * 2 tokens


def test_splice_refuses_a_placeholder_count_that_differs_from_the_images():
    with pytest.raises(ValueError, match="2 image placeholders"):
        models.splice_image_tokens(tensor(np.zeros((1, 3, 2))), np.array([[IMAGE, 2, IMAGE]]),
                                   tensor(np.zeros((1, 2, 2))), IMAGE)


def test_image_features_are_the_chosen_hidden_state_of_the_tower():
    tower = models.CLIPVisionTransformer({"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
                                          "num_attention_heads": 2, "image_size": 8, "patch_size": 4})
    images = _images(2)
    last, _ = tower(images)
    model = models.LLaVA(tower, _lm(), image_token_id=IMAGE, vision_layer=-1, select="cls_patch")
    np.testing.assert_array_equal(model.image_features(images).numpy(), last.numpy())
    model.select = "patch"
    np.testing.assert_array_equal(model.image_features(images).numpy(), last.numpy()[:, 1:])
    # -2: the input of the last layer (whose output is the last hidden state)
    model.vision_layer, model.select = -2, "cls_patch"
    np.testing.assert_allclose(tower.layers[-1](model.image_features(images)).numpy(), last.numpy(), rtol=1e-6)
    model.vision_layer = 3
    with pytest.raises(ValueError, match="out of range for 3 hidden states"):
        model.image_features(images)


# -- labels and loss -----------------------------------------------------------------------
def test_labels_mask_images_instructions_and_padding_by_hand():
    ids = np.array([[IMAGE, 2, 8, 9], [0, IMAGE, 3, 10]])
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1]])
    labels = models.answer_labels(ids, np.array([[0, 0, 1, 1], [0, 0, 0, 1]]))
    np.testing.assert_array_equal(labels, [[-100, -100, 8, 9], [-100, -100, -100, 10]])
    spliced = models.splice_image_tokens(tensor(np.zeros((2, 4, 3))), ids, tensor(np.zeros((2, 2, 3))), IMAGE,
                                         mask)
    # row 0: 2 image tokens, question, 8, 9; row 1: 2 image tokens, question, 10, then one pad
    np.testing.assert_array_equal(spliced.labels(labels), [[-100, -100, -100, 8, 9],
                                                           [-100, -100, -100, 10, -100]])


def test_llava_loss_is_next_token_cross_entropy_on_answers_only(f64):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 5, 6))
    labels = np.array([[-100, -100, -100, 4, 5], [-100, -100, 2, -100, -100]])
    log_p = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    by_hand = -(log_p[0, 2, 4] + log_p[0, 3, 5] + log_p[1, 1, 2]) / 3
    assert float(models.llava_loss(tensor(scores), labels).numpy()) == pytest.approx(by_hand, rel=1e-12)


# -- projector and splice against torch ----------------------------------------------------
def _torch_projected_splice(features, w1, b1, w2, b2, text, ids, mask):
    """A float64 torch rewrite: mlp2x_gelu projector, then the placeholders replaced row by row."""
    tokens = torch.nn.functional.gelu(features @ w1 + b1) @ w2 + b2
    rows, k = [], 0
    for n in range(ids.shape[0]):
        parts = []
        for t in range(ids.shape[1]):
            if mask[n, t]:
                if ids[n, t] == IMAGE:
                    parts.append(tokens[k])
                    k += 1
                else:
                    parts.append(text[n, t][None])
        rows.append(torch.cat(parts))
    length = max(len(r) for r in rows)
    return torch.stack([torch.cat([r, torch.zeros(length - len(r), r.shape[1], dtype=r.dtype)]) for r in rows])


def test_projector_and_splice_match_a_float64_torch_rewrite_in_values_and_gradients(f64):
    model = models.LLaVA(_vit(), _lm(hidden=4), projector="mlp2x_gelu", image_token_id=IMAGE)
    rng = np.random.default_rng(2)
    features = rng.normal(size=(3, 4, 8))
    ids = np.array([[IMAGE, 3, IMAGE], [4, IMAGE, 5]])
    mask = np.array([[1, 1, 1], [0, 1, 1]])
    text = rng.normal(size=(2, 3, 4))
    ours = tensor(features, requires_grad=True)
    spliced = models.splice_image_tokens(tensor(text), ids, model.projector(ours), IMAGE, mask)
    first, second = model.projector.layers[0], model.projector.layers[2]
    weights = [torch.tensor(p.data, requires_grad=True) for p in
               (first.weight, first.bias, second.weight, second.bias)]
    theirs = torch.tensor(features, requires_grad=True)
    expected = _torch_projected_splice(theirs, *weights, torch.tensor(text), ids, mask)
    np.testing.assert_allclose(spliced.embeddings.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = rng.normal(size=expected.shape)
    (spliced.embeddings * tensor(upstream)).sum().backward()
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    for param, reference in zip((first.weight, first.bias, second.weight, second.bias), weights):
        np.testing.assert_allclose(param.grad, reference.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_splice_gradients_pass_a_float64_gradient_check():
    ids = np.array([[IMAGE, 3, 4], [0, 5, IMAGE]])
    mask = np.array([[1, 1, 1], [0, 1, 1]])

    def spliced(text, images):
        return models.splice_image_tokens(text, ids, images, IMAGE, mask, padding_side="left").embeddings

    assert check_gradients(spliced, np.random.default_rng(3).normal(size=(2, 3, 2)),
                           np.random.default_rng(4).normal(size=(2, 2, 2)))


# -- training stages -----------------------------------------------------------------------
def _parameters(module) -> list[np.ndarray]:
    return [np.array(p.data) for p in module.parameters()]


@pytest.mark.parametrize("stage", [1, 2])
def test_a_training_step_changes_only_what_the_stage_trains(stage):
    model = models.LLaVA(_vit(), _lm(), image_token_id=IMAGE)
    ids = np.array([[IMAGE, 2, 8, 9], [IMAGE, 3, 10, 11]])
    labels = models.answer_labels(ids, ids >= 8)
    images = _images(2)
    model(ids, images)
    models.freeze_for_stage(model, stage)
    before = {part: _parameters(getattr(model, part)) for part in ("vision_encoder", "language_model", "projector")}
    optimizer = lamina.optim.Adam(model, lr=0.01)
    optimizer.zero_grad()
    model.loss(ids, images, labels).backward()
    optimizer.step()
    for part, old in before.items():
        changed = any(not np.array_equal(a, b) for a, b in zip(old, _parameters(getattr(model, part))))
        assert changed == (part == "projector" or (stage == 2 and part == "language_model")), part


def test_stage_two_with_lora_trains_adapters_and_keeps_the_language_model():
    model = models.LLaVA(_vit(), _lm(), image_token_id=IMAGE)
    ids = np.array([[IMAGE, 2, 8]])
    model(ids, _images(1))
    originals = list(model.language_model.parameters())
    before = [np.array(p.data) for p in originals]
    models.freeze_for_stage(model, 2, lora=lamina.nn.LoraConfig(r=2))
    adapters = [p for name, p in model.language_model.named_parameters() if p.trainable]
    assert adapters and all(not p.trainable for p in originals)
    adapters_before = [np.array(p.data) for p in adapters]
    optimizer = lamina.optim.Adam(model, lr=0.01)
    model.loss(ids, _images(1), models.answer_labels(ids, ids == 8)).backward()
    optimizer.step()
    for p, old in zip(originals, before):
        np.testing.assert_array_equal(p.data, old)
    assert any(not np.array_equal(p.data, old) for p, old in zip(adapters, adapters_before))


# -- generation ----------------------------------------------------------------------------
def test_cached_generation_equals_uncached_at_temperature_zero():
    model = models.LLaVA(_vit(), _lm(std=1.0), projector="linear", image_token_id=IMAGE, select="cls_patch")
    ids = np.array([[0, 0, IMAGE, 2], [IMAGE, 3, IMAGE, 2]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    images = _images(3, seed=5)
    cached = model.generate(images, ids, max_new_tokens=6, attention_mask=mask)
    rerun = model.generate(images, ids, max_new_tokens=6, attention_mask=mask, use_cache=False)
    np.testing.assert_array_equal(cached, rerun)
    # the greedy tokens are the argmax of a plain forward pass on the prompt and what it made
    full = np.concatenate([ids[1:], cached[1:, :-1]], axis=1)
    scores = model(full, images[1:]).numpy()
    np.testing.assert_array_equal(scores[0, -6:].argmax(-1), cached[1])
    # the left-padded row decodes as its prompt alone
    alone = model.generate(images[:1], ids[:1, 2:], max_new_tokens=6)
    np.testing.assert_array_equal(alone[0], cached[0])
    sampled = [model.generate(images, ids, max_new_tokens=6, attention_mask=mask, do_sample=True, seed=7,
                              use_cache=use) for use in (True, False)]
    np.testing.assert_array_equal(*sampled)


# -- saving --------------------------------------------------------------------------------
def test_config_and_weights_round_trip(tmp_path):
    model = models.LLaVA(_vit(), _lm(), image_token_id=IMAGE, vision_layer=-1)
    ids, images = np.array([[IMAGE, 2, 3]]), _images(1)
    expected = model(ids, images).numpy()
    save_file({k: lamina.backend.to_numpy(v) for k, v in model.state_dict().items()}, tmp_path / "llava.safetensors")
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(model))))
    twin(ids, images)
    twin.load_state_dict(load_file(tmp_path / "llava.safetensors")[0])
    assert isinstance(twin, models.LLaVA) and twin.get_config()["vision_layer"] == -1
    assert twin.projector_kind == "mlp2x_gelu" and twin.image_token_id == IMAGE
    np.testing.assert_array_equal(twin(ids, images).numpy(), expected)


@pytest.mark.parametrize("image_token_id, conv_tower", [(IMAGE, False), (0, True)])
def test_lamina_save_and_load_give_back_an_equal_model(tmp_path, image_token_id, conv_tower):
    # image_token_id 0: ids of zeros would hold a placeholder per token, not one per image
    tower = nn.Conv2D(8, 4, stride=4) if conv_tower else _vit()
    model = models.LLaVA(tower, _lm(), image_token_id=image_token_id, vision_layer=None if conv_tower else -2)
    ids, images = np.array([[image_token_id, 2, 3, image_token_id], [4, image_token_id, 5, 6]]), _images(3)
    model(ids, images)
    for param in model.parameters():
        param.data = param.data + np.float32(0.01)
    model.eval()
    expected = model(ids, images).numpy()
    lamina.save(model, tmp_path / "llava.safetensors")
    twin = lamina.load(tmp_path / "llava.safetensors")
    assert isinstance(twin, models.LLaVA) and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(ids, images).numpy(), expected)
    np.testing.assert_array_equal(twin.generate(images[:1], ids[:1, :3], max_new_tokens=2),
                                  model.generate(images[:1], ids[:1, :3], max_new_tokens=2))


def test_build_sample_inputs_refuses_shapes_of_other_inputs():
    with pytest.raises(lamina.errors.ShapeError, match=r"LLaVA.*\(N, T\), \(M, h, w, c\)"):
        models.LLaVA(_vit(), _lm()).build_sample_inputs([[None, 4]])


# -- learning ------------------------------------------------------------------------------
COLOURS, CORNERS = 3, 4
Q_COLOUR, Q_WHERE = 2, 3
FIRST_COLOUR, FIRST_CORNER = 4, 4 + COLOURS


def _visual_questions(count: int, seed: int):
    """8x8 images with a 4x4 square of one of 3 colours in one of 4 corners, and a question
    'colour?' or 'where?': ids [image, question, answer]."""
    rng = np.random.default_rng(seed)
    colour, corner = rng.integers(0, COLOURS, count), rng.integers(0, CORNERS, count)
    images = rng.normal(scale=0.05, size=(count, 8, 8, 3)).astype(np.float32)
    for k in range(count):
        row, col = divmod(int(corner[k]), 2)
        images[k, 4 * row:4 * row + 4, 4 * col:4 * col + 4, colour[k]] += 1.0
    ask_colour = rng.random(count) < 0.5
    answers = np.where(ask_colour, FIRST_COLOUR + colour, FIRST_CORNER + corner)
    ids = np.stack([np.full(count, IMAGE), np.where(ask_colour, Q_COLOUR, Q_WHERE), answers], axis=1)
    return images, ids


def _accuracy(scores, ids) -> float:
    return float((scores[:, -2].argmax(-1) == ids[:, -1]).mean())


def test_llava_learns_a_toy_visual_question_set_beyond_a_text_only_model():
    lamina.manual_seed(0)
    images, ids = _visual_questions(128, seed=0)
    test_images, test_ids = _visual_questions(120, seed=1)
    labels = models.answer_labels(ids, np.arange(3) == 2)
    encoder = models.vit(8, 4, num_classes=2, d_model=8, depth=1, num_heads=2, mlp_dim=16, channels=3)
    model = models.LLaVA(encoder, _lm(vocab=12, hidden=16, layers=1), image_token_id=IMAGE)
    model(ids[:2], images[:2])
    # a trained encoder's patch features tell where they are: stand-in, position embeddings of unit scale
    encoder.embedding.pos_embedding.data = encoder.embedding.pos_embedding.data * 50
    for stage, steps in ((1, 30), (2, 70)):
        models.freeze_for_stage(model, stage)
        optimizer = lamina.optim.Adam(model, lr=0.02)
        for _ in range(steps):
            optimizer.zero_grad()
            model.loss(ids, images, labels).backward()
            optimizer.step()
    with lamina.no_grad():
        accuracy = _accuracy(model(test_ids, test_images).numpy(), test_ids)

    text_only = _lm(vocab=12, hidden=16, layers=1)
    text_only(ids[:2, 1:])
    optimizer = lamina.optim.Adam(text_only, lr=0.02)
    for _ in range(100):
        optimizer.zero_grad()
        models.llava_loss(text_only(ids[:, 1:]), labels[:, 1:]).backward()
        optimizer.step()
    with lamina.no_grad():
        baseline = _accuracy(text_only(test_ids[:, 1:]).numpy(), test_ids)
    # a text-only model can do no better than the commonest answer per question (1/3, 1/4)
    assert baseline < 0.45
    assert accuracy > 0.9 and accuracy > baseline + 0.45, (accuracy, baseline)


def test_readme_example_runs():
    printed, names = run_readme_section("LLaVA: images spliced into a language model")
    assert names["new"].shape == (1, 3) and "stage 1 loss" in printed
