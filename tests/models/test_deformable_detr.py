"""Deformable DETR: the encoder and decoder layers against a float64 torch rewrite of the
reference modules (grid_sample ms-deform-attn); the positions and reference points against
NumPy / torch rewrites; box refinement by hand and its detaching; the focal matching and loss;
a gradient check of a tiny model; save/load; learning boxes of two classes; the README example."""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as TF
from tests.helpers import assert_close, check_gradients, run_readme_section
from tests.nn.test_ms_deform_attn_layer import _compare, torch_msda

import lamina
from lamina import models, vision
from lamina.autograd import no_grad
from lamina.functional import deformable_reference_points
from lamina.optim import AdamW

SHAPES = [(3, 4), (2, 2)]
S = sum(h * w for h, w in SHAPES)


@contextlib.contextmanager
def _float64():
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    try:
        yield
    finally:
        lamina.backend.set_default_dtype(before)


def _randomised(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return layer


def _sub(params, prefix):
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _norm(x, params, name):
    return TF.layer_norm(x, (x.shape[-1],), params[f"{name}.weight"], params[f"{name}.bias"], 1e-5)


def _ffn(x, params):
    return torch.relu(x @ params["linear1.weight"] + params["linear1.bias"]) @ params["linear2.weight"] + \
        params["linear2.bias"]


def torch_encoder_layer(params, layer, src, pos, reference_points):
    """The reference DeformableTransformerEncoderLayer.forward (pos holding the level embeddings)."""
    src2 = torch_msda(_sub(params, "self_attn."), layer.self_attn, src + pos, reference_points, src, SHAPES)
    src = _norm(src + src2, params, "norm1")
    return _norm(src + _ffn(src, params), params, "norm2")


def torch_decoder_layer(params, layer, tgt, query_pos, reference_points, src):
    """The reference DeformableTransformerDecoderLayer.forward, self-attention by torch's MHA."""
    q = (tgt + query_pos).transpose(0, 1)
    attended = TF.multi_head_attention_forward(
        q, q, tgt.transpose(0, 1), layer.d_model, layer.self_attn.num_heads, params["self_attn.in_proj_weight"],
        params["self_attn.in_proj_bias"], None, None, False, 0.0, params["self_attn.out_proj.weight"].T,
        params["self_attn.out_proj.bias"], training=False, need_weights=False)[0].transpose(0, 1)
    tgt = _norm(tgt + attended, params, "norm2")
    tgt2 = torch_msda(_sub(params, "cross_attn."), layer.cross_attn, tgt + query_pos, reference_points, src, SHAPES)
    tgt = _norm(tgt + tgt2, params, "norm1")
    return _norm(tgt + _ffn(tgt, params), params, "norm3")


def test_encoder_layer_matches_the_reference_in_torch():
    with _float64():
        layer = _randomised(models.DeformableDetrEncoderLayer(8, 12, 0.0, n_levels=2, n_heads=2, n_points=3))
    rng = np.random.default_rng(1)
    src, pos = rng.standard_normal((2, S, 8)), rng.standard_normal((2, S, 8))
    ref = rng.uniform(0.1, 0.9, (2, S, 2, 2))
    _compare(layer, lambda p, *a: torch_encoder_layer(p, layer, *a), [src, pos, ref],
             lambda lay, *a: lay(*a, SHAPES))


def test_decoder_layer_matches_the_reference_in_torch():
    with _float64():
        layer = _randomised(models.DeformableDetrDecoderLayer(8, 12, 0.0, n_levels=2, n_heads=2, n_points=3))
    rng = np.random.default_rng(2)
    tgt, query_pos, src = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 5, 8)), rng.standard_normal((2, S, 8))
    for width in (2, 4):        # reference points, then the refined boxes
        ref = rng.uniform(0.2, 0.8, (2, 5, 2, width))
        layer.zero_grad()
        _compare(layer, lambda p, *a: torch_decoder_layer(p, layer, *a), [tgt, query_pos, ref, src],
                 lambda lay, *a: lay(*a, SHAPES))


def test_reference_points_equal_a_numpy_rewrite_of_the_reference():
    ratios = np.array([[[1.0, 1.0], [0.5, 1.0]], [[0.75, 0.5], [1.0, 0.5]]])
    expected = []
    for level, (h, w) in enumerate(SHAPES):
        y, x = np.meshgrid(np.linspace(0.5, h - 0.5, h), np.linspace(0.5, w - 0.5, w), indexing="ij")
        expected.append(np.stack([x.reshape(1, -1) / (ratios[:, None, level, 0] * w),
                                  y.reshape(1, -1) / (ratios[:, None, level, 1] * h)], axis=-1))
    expected = np.concatenate(expected, axis=1)[:, :, None] * ratios[:, None]
    got = deformable_reference_points(SHAPES, ratios, dtype=np.float64).numpy()
    assert got.shape == (2, S, 2, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_positions_equal_the_references_sine_embedding():
    h, w, feats = 3, 5, 8
    mask = torch.ones(1, h, w)
    y, x = mask.cumsum(1, dtype=torch.float64), mask.cumsum(2, dtype=torch.float64)
    y = (y - 0.5) / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = (x - 0.5) / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    t = 10000 ** (2 * (torch.arange(feats, dtype=torch.float64) // 2) / feats)
    px, py = x[..., None] / t, y[..., None] / t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    expected = torch.cat((py, px), dim=3)[0].numpy()
    np.testing.assert_allclose(models.deformable_position_encoding(h, w, feats), expected, rtol=1e-12, atol=1e-14)


def test_box_refinement_by_hand():
    def sigmoid(v):
        return 1 / (1 + math.exp(-v))

    deltas = np.array([[0.5, -1.0, 0.25, 2.0]])
    box = models.refine_boxes(deltas, np.array([[0.5, 0.2, 0.8, 0.1]])).numpy()[0]
    expected = [sigmoid(0.5), 1 / (1 + 4 * math.e), 4 * math.exp(0.25) / (1 + 4 * math.exp(0.25)),
                (math.exp(2) / 9) / (1 + math.exp(2) / 9)]
    np.testing.assert_allclose(box, expected, rtol=1e-6)
    point = models.refine_boxes(deltas, np.array([[0.5, 0.2]])).numpy()[0]
    np.testing.assert_allclose(point, [sigmoid(0.5), 1 / (1 + 4 * math.e), sigmoid(0.25), sigmoid(2.0)], rtol=1e-6)
    edge = models.inverse_sigmoid(np.array([0.0, 1.0, 1.5])).numpy()      # clipped at eps = 1e-5
    np.testing.assert_allclose(edge, [math.log(1e-5), -math.log(1e-5), -math.log(1e-5)], rtol=1e-5)


def _tiny(seed=0, float64=True, **options):
    """A float64 model with 3 levels (2 backbone maps and an extra one), 2 decoder layers."""
    lamina.manual_seed(seed)
    with _float64() if float64 else contextlib.nullcontext():
        model = models.DeformableDETR(models.DeformableDetrConvBackbone((4, 4, 4), 2), 2, hidden_dim=8, num_heads=2,
                                      num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=8, dropout=0.0,
                                      num_queries=3, num_feature_levels=3, n_points=2, norm_groups=2,
                                      image_mean=(0.5,) * 3, image_std=(0.5,) * 3, **options)
        model.build((1, 8, 8, 3))
    model = _randomised(model, seed, scale=0.2)
    for p in model.parameters():
        p.data = p.data.astype(lamina.backend.get_default_dtype() if not float64 else np.float64)
    return model


def _images(n=1, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 8, 8, 3))


def test_box_refinement_detaches_between_layers():
    model = _tiny(with_box_refine=True)
    assert len(model.bbox_embed) == len(model.class_embed) == 2
    first, second = model.bbox_embed[0], model.bbox_embed[1]
    outputs = model.raw_outputs(lamina.tensor(_images(), dtype=np.float64))
    outputs["pred_boxes"].sum().backward()        # the last layer's boxes refine the first's, detached
    assert all(p.grad is None or not np.any(p.grad) for p in first.parameters())
    assert all(np.any(p.grad) for p in second.parameters())
    model.zero_grad()
    outputs = model.raw_outputs(lamina.tensor(_images(), dtype=np.float64))
    outputs["aux_outputs"][0]["pred_boxes"].sum().backward()
    assert all(np.any(p.grad) for p in first.parameters())
    plain = _tiny()
    _, references = plain.transformer(*_transformer_inputs(plain))
    assert len(plain.bbox_embed) == 1 and np.array_equal(references[0].numpy(), references[1].numpy())


def _transformer_inputs(model):
    images = model.normalize(lamina.tensor(_images(), dtype=np.float64))
    features = model.backbone(images)
    srcs = [model.input_proj[0](features[0]), model.input_proj[1](features[1])]
    srcs.append(model.input_proj[2](features[1]))
    pos = [lamina.tensor(models.deformable_position_encoding(s.shape[1], s.shape[2], 4)[None]) for s in srcs]
    return srcs, pos, model.query_embed.weight


def test_tiny_model_gradient_check():
    model = _tiny(with_box_refine=True)
    rng = np.random.default_rng(3)
    w_logits, w_boxes = rng.standard_normal((1, 3, 2)), rng.standard_normal((1, 3, 4))

    def fn(images):
        out = model.raw_outputs(images)
        aux = out["aux_outputs"][0]
        return ((out["pred_logits"] + aux["pred_logits"]) * w_logits).sum() + \
            ((out["pred_boxes"] + aux["pred_boxes"]) * w_boxes).sum()

    assert check_gradients(fn, _images(seed=4))


def _torch_focal_cost(logits, boxes, labels, truth, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    neg = (1 - alpha) * p ** gamma * -(1 - p + 1e-8).log()
    pos = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    corners = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    truth_corners = torch.cat([truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2], 1)
    lt = torch.max(corners[:, None, :2], truth_corners[:, :2])
    rb = torch.min(corners[:, None, 2:], truth_corners[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (boxes[:, 2] * boxes[:, 3])[:, None] + truth[:, 2] * truth[:, 3] - inter
    hull = (torch.max(corners[:, None, 2:], truth_corners[:, 2:]) - torch.min(corners[:, None, :2],
                                                                               truth_corners[:, :2])).prod(-1)
    giou = inter / union - (hull - union) / hull
    return 2 * (pos - neg)[:, labels] + 5 * torch.cdist(boxes, truth, p=1) - 2 * giou


def test_focal_matching_and_loss_equal_torch_rewrites():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((1, 4, 3))
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (1, 4, 2)), rng.uniform(0.1, 0.3, (1, 4, 2))], -1)
    target = {"labels": np.array([2, 0]), "boxes": np.array([[0.4, 0.5, 0.2, 0.3], [0.6, 0.4, 0.1, 0.2]])}
    cost = _torch_focal_cost(torch.tensor(logits[0]), torch.tensor(boxes[0]), target["labels"],
                             torch.tensor(target["boxes"])).numpy()
    np.testing.assert_allclose(models.focal_matching_cost(logits[0], boxes[0], target["labels"], target["boxes"]),
                               cost, rtol=1e-10)
    criterion = models.DeformableDetrCriterion(3)
    (queries, objects), = criterion.matcher(logits, boxes, [target])
    best = min(itertools.permutations(range(4), 2), key=lambda qs: cost[list(qs), [0, 1]].sum())
    assert dict(zip(objects.tolist(), queries.tolist())) == {0: best[0], 1: best[1]}
    losses = criterion.losses(lamina.tensor(logits, dtype=np.float64), lamina.tensor(boxes, dtype=np.float64),
                              [target], 2)
    onehot = torch.zeros(1, 4, 3, dtype=torch.float64)
    onehot[0, queries, target["labels"][objects]] = 1.0
    z = torch.tensor(logits)
    p = torch.sigmoid(z)
    ce = TF.binary_cross_entropy_with_logits(z, onehot, reduction="none")
    focal = ce * (1 - (p * onehot + (1 - p) * (1 - onehot))) ** 2 * (0.25 * onehot + 0.75 * (1 - onehot))
    assert_close(losses["loss_ce"].numpy(), (focal.mean(1).sum() / 2 * 4 * 2.0).numpy(), 1e-10, "loss_ce")
    matched = np.abs(boxes[0, queries] - target["boxes"][objects]).sum() / 2 * 5.0
    assert_close(losses["loss_bbox"].numpy(), matched, 1e-10, "loss_bbox")


def test_save_and_load_round_trip(tmp_path):
    model = _tiny(float64=False, with_box_refine=True)
    model.eval()
    x = _images(2).astype(np.float32)
    with no_grad():
        expected = model(x)
    lamina.save(model, tmp_path / "ddetr.safetensors")
    twin = lamina.load(tmp_path / "ddetr.safetensors")
    twin.eval()
    assert type(twin) is models.DeformableDETR and twin.get_config() == model.get_config()
    with no_grad():
        got = twin(x)
    for a, b in zip(got, expected):
        for key in ("boxes", "scores", "labels"):
            assert np.array_equal(a[key], b[key])


def test_resnet50_parameter_counts():
    for refine, total, trained in ((False, 40_069_665, 39_847_265), (True, 40_849_660, 40_627_260)):
        model = models.deformable_detr_resnet50(91, with_box_refine=refine)
        model.build((1, 64, 64, 3))
        assert sum(p.size for p in model.parameters()) == total
        assert sum(p.size for p in model.parameters() if p.requires_grad) == trained


def _rectangles(n, seed, size=32):
    """Images with one filled rectangle each, red (class 0) or green (class 1)."""
    rng = np.random.default_rng(seed)
    images, targets = np.zeros((n, size, size, 3), np.float32), []
    for i in range(n):
        w, h = rng.integers(8, 17, 2)
        x1, y1, label = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1), int(rng.integers(2))
        images[i, y1:y1 + h, x1:x1 + w, label] = 1.0
        targets.append({"boxes": np.array([[x1, y1, x1 + w, y1 + h]], float), "labels": np.array([label])})
    return images, targets


def test_learns_rectangles_of_two_classes():
    lamina.manual_seed(0)
    images, targets = _rectangles(64, 0)
    test_images, test_targets = _rectangles(32, 1)
    model = models.deformable_detr_small(2, num_queries=4)
    model.train()
    model(images[:2], targets[:2])
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(100):
        batch = rng.choice(64, 8, replace=False)
        loss = sum(model(images[batch], [targets[i] for i in batch]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with no_grad():
        detections = model(test_images)
    truths = [(t["boxes"], t["labels"]) for t in test_targets]
    found = vision.mean_average_precision([(d["boxes"], d["scores"], d["labels"]) for d in detections], truths, 2)
    mean_box = np.mean([t["boxes"][0] for t in targets], axis=0)
    trivial = vision.mean_average_precision([(np.stack([mean_box] * 2), np.array([0.5, 0.5]), np.array([0, 1]))
                                             for _ in truths], truths, 2)
    assert trivial < 0.05 and found > 0.6, (found, trivial)


def test_readme_example():
    printed, names = run_readme_section("Deformable DETR")
    assert printed.split() == ["6", "True"]
    assert isinstance(names["model"], models.DeformableDETR)
