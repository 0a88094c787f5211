"""OWL-ViT: the box bias against a NumPy reference, the class head and the set loss against float64
torch rewrites of their formulas (values and gradients), a float64 gradient check, the matching
against a brute-force search, post-processing against a NumPy reference, save/load, input
errors, the README example, and a tiny CLIP turned detector finding coloured squares named by
one-word queries, one of them a colour only its contrastive pretraining saw."""

import itertools
import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import models, optim, vision
from lamina.autograd import no_grad


def _tiny(box_hidden=8, **clip_options) -> models.OWLViT:
    return models.OWLViT(models.clip("tiny", **clip_options), box_hidden=box_hidden)


def _images(n=2, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((n, 16, 16, 3)).astype(dtype)


def _perturb(model, seed=3, scale=0.3):
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data = (param.data + scale * rng.standard_normal(param.shape)).astype(param.dtype)


def _logit(p):
    return np.log(p / (1 - p))


# -- the box head -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 4])
def test_box_bias_is_each_cells_centre_and_size_in_logit_space(n):
    expected = np.zeros((n * n, 4))
    for token in range(n * n):
        row, column = divmod(token, n)
        expected[token] = [(column + 0.5) / n, (row + 0.5) / n, 1 / n, 1 / n]
    expected = np.where(expected == 1.0, 0.0, _logit(np.clip(expected, 1e-9, 1 - 1e-9)))  # logit(1) -> 0 for n = 1
    np.testing.assert_allclose(models.owlvit_box_bias(n), expected, rtol=1e-12, atol=1e-12)


def test_a_zero_box_head_predicts_every_tokens_own_cell():
    model = _tiny()
    model(_images(), query_embeds=np.ones((2, 16), np.float32))
    last = model.box_head[2]
    last.weight.data, last.bias.data = np.zeros_like(last.weight.data), np.zeros_like(last.bias.data)
    with no_grad():
        boxes = model(_images(), query_embeds=np.ones((2, 16), np.float32)).pred_boxes.numpy()
    cells = np.array([[(i % 4 + 0.5) / 4, (i // 4 + 0.5) / 4, 0.25, 0.25] for i in range(16)])
    np.testing.assert_allclose(boxes, np.broadcast_to(cells, (2, 16, 4)), rtol=1e-5, atol=1e-6)


# -- the class head -----------------------------------------------------------------------
def _class_head_model():
    lamina.set_default_dtype(np.float64)
    model = _tiny()
    model(_images(dtype=np.float64), query_embeds=np.ones((3, 16)))
    _perturb(model)
    return model


def _torch_class_logits(z, q, head):
    """(cos(e, q) + shift) * (elu(scale) + 1), e = z W_c + b_c, per the OWL-ViT head."""
    e = z @ head["class_embed.weight"] + head["class_embed.bias"]
    e = e / e.norm(dim=-1, keepdim=True)
    q = q / q.norm(dim=-1, keepdim=True)
    cosine = e @ (q.T if q.ndim == 2 else q.transpose(1, 2))
    shift = z @ head["logit_shift.weight"] + head["logit_shift.bias"]
    scale = torch.nn.functional.elu(z @ head["logit_scale.weight"] + head["logit_scale.bias"]) + 1
    return (cosine + shift) * scale


@pytest.mark.parametrize("per_image_queries", [False, True])
def test_class_logits_and_gradients_equal_a_float64_torch_rewrite(per_image_queries):
    model = _class_head_model()
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, 5, 32))
    q = rng.standard_normal((2, 3, 16) if per_image_queries else (3, 16))
    weights = rng.standard_normal((2, 5, 3))
    zl, ql = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (z, q))
    logits, _ = model.class_logits(zl, ql)
    (logits * lamina.tensor(weights)).sum().backward()
    names = [f"{layer}.{p}" for layer in ("class_embed", "logit_shift", "logit_scale") for p in ("weight", "bias")]
    params = dict(model.named_parameters())
    head = {name: torch.tensor(params[name].data, requires_grad=True) for name in names}
    zt, qt = (torch.tensor(a, requires_grad=True) for a in (z, q))
    expected = _torch_class_logits(zt, qt, head)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(logits.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(zl.grad, zt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ql.grad, qt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name in names:
        np.testing.assert_allclose(params[name].grad, head[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_heads_pass_a_float64_gradient_check():
    model = _class_head_model()
    rng = np.random.default_rng(2)

    def heads(z, q):
        logits, _ = model.class_logits(z, q)
        return logits.sum() * 0.3 + (model.box_predictions(z) * lamina.tensor(weights)).sum()

    weights = rng.standard_normal((1, 16, 4))
    assert check_gradients(heads, rng.standard_normal((1, 16, 32)), rng.standard_normal((2, 16)))


def test_whole_model_gradient_check_from_images():
    lamina.set_default_dtype(np.float64)
    model = _tiny(text_config={"num_hidden_layers": 1}, vision_config={"num_hidden_layers": 1, "image_size": 8})
    queries = np.random.default_rng(4).standard_normal((2, 16))
    images = _images(1, seed=5, dtype=np.float64)[:, :8, :8]
    model(images, query_embeds=queries)
    _perturb(model, scale=0.1)

    def detector(images, q):
        out = model(images, query_embeds=q)
        return out.logits.sum() + out.pred_boxes.sum() * 2.0

    assert check_gradients(detector, images, queries)


# -- training ---------------------------------------------------------------------------
def _outputs_and_targets(seed=0, n=2, p=6, q=3):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, p, q))
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (n, p, 2)), rng.uniform(0.1, 0.4, (n, p, 2))], axis=-1)
    targets = [{"labels": np.array([2, 0]), "boxes": np.array([[0.4, 0.5, 0.2, 0.3], [0.6, 0.4, 0.3, 0.2]])},
               {"labels": np.array([1]), "boxes": np.array([[0.5, 0.5, 0.25, 0.25]])}]
    return logits, boxes, targets[:n]


def _torch_giou(a, b):
    """GIoU of matched corner boxes, written out."""
    inter_wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a) + area(b) - inter
    hull_wh = torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    return inter / union - (hull - union) / hull


def _torch_corners(b):
    return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=1)


@pytest.mark.parametrize("class_loss", ["focal", "bce"])
def test_set_loss_equals_a_torch_rewrite_with_the_same_matches(class_loss):
    lamina.set_default_dtype(np.float64)
    logits, boxes, targets = _outputs_and_targets()
    criterion = models.OWLViTCriterion(class_loss=class_loss, alpha=0.3, gamma=1.5, class_weight=1.5,
                                       bbox_weight=4.0, giou_weight=3.0)
    ll, lb = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (logits, boxes))
    terms = criterion(models.OWLViTOutput(ll, lb, None, None, None), targets)
    sum(terms.values()).backward()
    matches = criterion.match(logits, boxes, targets)

    tl, tb = (torch.tensor(a, requires_grad=True) for a in (logits, boxes))
    y = torch.zeros_like(tl)
    predicted, truth = [], []
    for image, ((tokens, objects), target) in enumerate(zip(matches, targets)):
        for token, obj in zip(tokens, objects):
            y[image, token, target["labels"][obj]] = 1.0
            predicted.append(tb[image, token])
            truth.append(torch.tensor(target["boxes"][obj]))
    n_boxes = 3
    bce = torch.nn.functional.binary_cross_entropy_with_logits(tl, y, reduction="none")
    if class_loss == "focal":
        p = torch.sigmoid(tl)
        p_t = p * y + (1 - p) * (1 - y)
        bce = (0.3 * y + 0.7 * (1 - y)) * (1 - p_t) ** 1.5 * bce
    predicted, truth = torch.stack(predicted), torch.stack(truth)
    expected = {"loss_class": 1.5 * bce.sum() / n_boxes,
                "loss_bbox": 4.0 * (predicted - truth).abs().sum() / n_boxes,
                "loss_giou": 3.0 * (1 - _torch_giou(_torch_corners(predicted), _torch_corners(truth))).sum() / n_boxes}
    sum(expected.values()).backward()
    for key, value in expected.items():
        np.testing.assert_allclose(terms[key].numpy(), value.detach().numpy(), rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(ll.grad, tl.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(lb.grad, tb.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_matching_is_the_least_cost_assignment_by_brute_force():
    logits, boxes, targets = _outputs_and_targets(seed=7, p=5)
    criterion = models.OWLViTCriterion(cost_class=2.0, cost_bbox=3.0, cost_giou=1.0)
    for (tokens, objects), image_logits, image_boxes, target in zip(criterion.match(logits, boxes, targets), logits,
                                                                    boxes, targets):
        cost = models.owlvit_matching_cost(image_logits, image_boxes, target["labels"], target["boxes"], 2.0, 3.0, 1.0)
        n = len(target["labels"])
        best = min(sum(cost[t, j] for j, t in enumerate(chosen)) for chosen in itertools.permutations(range(5), n))
        assert np.isclose(cost[tokens, objects].sum(), best) and sorted(objects) == list(range(n))
    p = 1 / (1 + np.exp(-logits[0][:, [2]]))
    assert np.isclose(models.owlvit_matching_cost(logits[0], boxes[0], [2], [boxes[0][1]])[1, 0], -p[1, 0] - 2.0)


# -- detection ----------------------------------------------------------------------------
def _reference_postprocess(logits, boxes, size, thresh, top_k, nms):
    height, width = size
    out = []
    for image_logits, image_boxes in zip(logits, boxes):
        found = []
        for token in range(len(image_logits)):
            scores = 1 / (1 + np.exp(-image_logits[token]))
            label = int(np.argmax(scores))
            if scores[label] > thresh:
                cx, cy, w, h = image_boxes[token]
                found.append((scores[label], label, [(cx - w / 2) * width, (cy - h / 2) * height,
                                                     (cx + w / 2) * width, (cy + h / 2) * height]))
        found.sort(key=lambda d: -d[0])
        kept = []
        for score, label, box in found:
            if nms is not None and any(k[1] == label and _iou(k[2], box) > nms for k in kept):
                continue
            kept.append((score, label, box))
        kept = kept[:top_k]
        out.append((np.array([k[2] for k in kept]).reshape(-1, 4), np.array([k[0] for k in kept]),
                    np.array([k[1] for k in kept], dtype=np.int64)))
    return out


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("thresh, top_k, nms", [(0.0, 100, None), (0.4, 5, None), (0.2, 4, 0.3), (0.99, 10, 0.5)])
def test_postprocess_equals_a_numpy_reference(thresh, top_k, nms):
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((2, 12, 3))
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (2, 12, 2)), rng.uniform(0.1, 0.5, (2, 12, 2))], axis=-1)
    got = models.owlvit_postprocess(logits, boxes, (20, 30), thresh, top_k, nms)
    for detections, (ref_boxes, ref_scores, ref_labels) in zip(got, _reference_postprocess(logits, boxes, (20, 30),
                                                                                          thresh, top_k, nms)):
        np.testing.assert_allclose(detections["boxes"], ref_boxes, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(detections["scores"], ref_scores, rtol=1e-6)
        np.testing.assert_array_equal(detections["labels"], ref_labels)
    assert got[0]["boxes"].dtype == np.float32 and got[0]["labels"].dtype == np.int64


def test_image_conditioned_query_is_the_best_covering_tokens_class_embedding():
    model = _tiny()
    images = _images()
    box = [[0.3, 0.6, 0.2, 0.2], [0.7, 0.2, 0.3, 0.3]]
    queries = model.image_query_embeddings(images, box)
    with no_grad():
        out = model(images, query_embeds=np.ones((1, 16), np.float32))
    for image in range(2):
        overlap = vision.box_iou(vision.box_convert(out.pred_boxes.numpy()[image], "cxcywh", "xyxy"),
                                 vision.box_convert(np.array([box[image]]), "cxcywh", "xyxy"))[:, 0]
        np.testing.assert_allclose(queries.numpy()[image], out.class_embeds.numpy()[image, np.argmax(overlap)])
    assert model(images, query_embeds=queries).logits.shape == (2, 16, 2)


def test_save_and_load_round_trip(tmp_path):
    model = _tiny()
    ids = np.array([[3], [9]])
    model(_images(), ids)
    _perturb(model, scale=0.05)
    lamina.save(model, tmp_path / "owlvit.safetensors")
    twin = lamina.load(tmp_path / "owlvit.safetensors")
    assert type(twin) is models.OWLViT and twin.get_config() == model.get_config()
    with no_grad():
        a, b = model(_images(), ids), twin(_images(), ids)
    np.testing.assert_array_equal(a.logits.numpy(), b.logits.numpy())
    np.testing.assert_array_equal(a.pred_boxes.numpy(), b.pred_boxes.numpy())


def test_errors_name_the_model_and_the_shapes():
    model = _tiny()
    with pytest.raises(ValueError, match="exactly one"):
        model(_images())
    with pytest.raises(lamina.ShapeError, match=r"query embeddings.*\(3, 7\)"):
        model(_images(), query_embeds=np.ones((3, 7), np.float32))
    with pytest.raises(TypeError, match="CLIP"):
        models.OWLViT(object())
    with pytest.raises(ValueError, match=r"class_loss"):
        models.OWLViTCriterion(class_loss="softmax")
    with pytest.raises(lamina.ShapeError, match="owlvit_postprocess"):
        models.owlvit_postprocess(np.zeros((2, 3)), np.zeros((2, 3, 4)), (8, 8))


def test_readme_example_runs():
    printed, names = run_readme_section("OWL-ViT: open-vocabulary detection")
    lines = printed.split("\n")
    assert lines[0] == "(2, 16, 3) (2, 16, 4)" and isinstance(names["detections"], list)
    assert set(names["losses"]) == {"loss_class", "loss_bbox", "loss_giou"}


# -- learning -----------------------------------------------------------------------------
COLOURS = {1: (1, 0, 0), 2: (0, 1, 0), 3: (0, 0, 1), 4: (1, 1, 0), 5: (0, 1, 1), 6: (1, 0, 1)}
WORDS = np.array(sorted(COLOURS))           # one-token texts: red, green, blue, yellow, cyan, magenta
DETECTION_COLOURS, UNSEEN = (1, 2, 3), 4    # yellow: only in the text tower's pretraining


def _square_scenes(rng, n, words):
    """Dark noisy 16 x 16 images with one or two squares (4 to 6 px) of the given colour words:
    images and per image (corner boxes in pixels, word ids)."""
    images = rng.uniform(0, 0.2, (n, 16, 16, 3)).astype(np.float32)
    truth = []
    for image in images:
        boxes, labels = [], []
        for _ in range(rng.integers(1, 3)):
            side = int(rng.integers(4, 7))
            x, y = rng.integers(0, 16 - side + 1, 2)
            word = words[rng.integers(len(words))]
            image[y:y + side, x:x + side] = COLOURS[word]
            boxes.append([x, y, x + side, y + side])
            labels.append(word)
        truth.append((np.array(boxes, dtype=np.float64), np.array(labels)))
    return images, truth


def _pretrained_clip(rng, steps):
    """A tiny CLIP trained contrastively on one square of every colour per batch and its word."""
    clip = models.clip("tiny", text_config={"vocab_size": 8, "max_position_embeddings": 2})
    clip.build()
    opt = optim.Adam(clip, lr=3e-3)
    for _ in range(steps):
        images = rng.uniform(0, 0.2, (len(WORDS), 16, 16, 3)).astype(np.float32)
        for image, word in zip(images, WORDS):
            side = int(rng.integers(5, 10))
            x, y = rng.integers(0, 16 - side + 1, 2)
            image[y:y + side, x:x + side] = COLOURS[word]
        loss = clip(images, WORDS[:, None], return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clip


def _map(model, queries, query_words, words, rng):
    """mAP@0.5 on 40 new scenes of ``words`` queried by ``query_words``, and that of a trivial
    detector: every grid cell as a box, with random scores and words."""
    images, truth = _square_scenes(rng, 40, words)
    with no_grad():
        out = model(images, query_embeds=queries[[w - 1 for w in query_words]])
    detections = models.owlvit_postprocess(out.logits, out.pred_boxes, (16, 16), score_thresh=0.0, nms_threshold=0.5)
    predictions = [(d["boxes"], d["scores"], np.asarray(query_words)[d["labels"]]) for d in detections]
    cells = vision.box_convert(np.c_[(np.arange(16) % 4 + 0.5) / 4, (np.arange(16) // 4 + 0.5) / 4,
                                     np.full((16, 2), 0.25)], "cxcywh", "xyxy") * 16
    trivial = [(cells, rng.random(16), rng.choice(query_words, 16)) for _ in truth]
    return (vision.mean_average_precision(predictions, truth, 7, 0.5),
            vision.mean_average_precision(trivial, truth, 7, 0.5))


def _unseen_against_other_query(model, queries, rng):
    """On 400 new scenes of a yellow square beside (not overlapping) a square of another colour c:
    the fraction in which the yellow query prefers the yellow square to the other (its best logit
    over the grid cells centred in one square minus that in the other) by more than c's own query
    does, a tie counting a half. A detector that ignores its queries scores 0.5 exactly, whatever
    colour it favours."""
    images = rng.uniform(0, 0.2, (400, 16, 16, 3)).astype(np.float32)
    squares, others = np.tile([0, 0, 16, 16], (400, 2, 1)), rng.choice([w for w in WORDS if w != UNSEEN], 400)
    for image, pair, other in zip(images, squares, others):
        while np.all(pair[0, 2:] > pair[1, :2]) and np.all(pair[1, 2:] > pair[0, :2]):    # until apart
            for square in pair:
                side = int(rng.integers(4, 7))
                square[:2] = rng.integers(0, 16 - side + 1, 2)
                square[2:] = square[:2] + side
        for (x0, y0, x1, y1), word in zip(pair, (UNSEEN, other)):
            image[y0:y1, x0:x1] = COLOURS[word]
    with no_grad():
        logits = model(images, query_embeds=queries).logits.numpy()          # (400, 16 cells, 6 words)
    centres = np.c_[np.arange(16) % 4, np.arange(16) // 4] * 4 + 2
    inside = [np.all((centres >= squares[:, [i], :2]) & (centres < squares[:, [i], 2:]), axis=-1) for i in (0, 1)]
    margins = (np.where(inside[0][..., None], logits, -np.inf).max(1)
               - np.where(inside[1][..., None], logits, -np.inf).max(1))   # (400, 6): per query, yellow over other
    own = margins[np.arange(400), others - 1]
    return np.mean((margins[:, UNSEEN - 1] > own) + 0.5 * (margins[:, UNSEEN - 1] == own))


def _detector_figures(seed):
    """Pretrain a tiny CLIP, train it as a detector of the DETECTION_COLOURS (its text tower
    frozen) and return the mAP@0.5 figures of :func:`_map`: trained colours, the unseen colour
    queried alone and among all six queries (with the trivial detector's beside the first two), and
    :func:`_unseen_against_other_query`'s figure."""
    lamina.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = models.OWLViT(_pretrained_clip(rng, 200))
    criterion = models.OWLViTCriterion()
    with no_grad():
        queries = model.text_query_embeddings(WORDS[:, None]).numpy()   # the text tower stays as pretrained
    trained = queries[[w - 1 for w in DETECTION_COLOURS]]
    model(_images(1), query_embeds=trained)
    opt = optim.Adam([p for name, p in model.named_parameters() if not name.startswith("clip.text")], lr=3e-3)
    steps = 500
    for step in range(steps):
        opt.lr = 3e-3 * (1 - step / steps)                                 # a linear decay steadies the end
        images, truth = _square_scenes(rng, 8, DETECTION_COLOURS)
        targets = [{"labels": labels - 1, "boxes": vision.box_convert(boxes / 16, "xyxy", "cxcywh")}
                   for boxes, labels in truth]
        loss = sum(criterion(model(images, query_embeds=trained), targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seen, seen_trivial = _map(model, queries, WORDS, DETECTION_COLOURS, np.random.default_rng(1))
    alone, alone_trivial = _map(model, queries, (UNSEEN,), (UNSEEN,), np.random.default_rng(2))
    among_all, _ = _map(model, queries, WORDS, (UNSEEN,), np.random.default_rng(2))
    preference = _unseen_against_other_query(model, queries, np.random.default_rng(3))
    return np.array([seen, seen_trivial, alone, alone_trivial, among_all, preference])


def test_detects_queried_colours_and_a_colour_unseen_in_detection_training():
    # The unseen colour's transfer rests on class_embed, learnt from three colours alone: one
    # training of the detector in ten leaves it near chance, so the test averages two trainings.
    start = time.perf_counter()
    figures = np.mean([_detector_figures(seed) for seed in (1, 2)], axis=0)
    seen, seen_trivial, alone, alone_trivial, among_all, preference = figures
    print(f"mAP@0.5: trained colours {seen:.3f} (trivial {seen_trivial:.3f}); the unseen colour queried alone "
          f"{alone:.3f} (trivial {alone_trivial:.3f}), among all six queries {among_all:.3f}; the unseen colour's "
          f"query against the other square's: {preference:.3f} (0.5 if the queries are ignored); "
          f"{time.perf_counter() - start:.1f} s")
    # measured on an AMD EPYC host, one training per seed 1-10: trained colours 0.26-0.86, the unseen
    # colour alone 0.06-0.59 (trivial 0.004); the means of seeds 1-2, 3-4, ..., 9-10: 0.39-0.67 and
    # 0.17-0.58; this test's two: 0.55 and 0.16; about 12 s of CPU (one training: about 6 s)
    assert seen > 0.15 and seen > 20 * seen_trivial
    # Squares of the unseen colour alone are found even by a detector that ignores its queries (its
    # class head's cosine zeroed: trained colours 0.04-0.27, this figure 0.11-0.49), so this checks
    # only that the boxes and scores carry over to a new colour; the next checks the query's word.
    assert alone > 0.08 and alone > 20 * alone_trivial
    # measured on an AMD EPYC host, one training per seed 1-10: 0.71-1.00 (0.65-1.00 for seeds 1-6
    # with OPENBLAS_CORETYPE=SkylakeX); the means of seeds 1-2, 3-4, ..., 9-10: 0.85-0.99 (SkylakeX:
    # 0.83, 0.86, 0.98); this test's two: 0.94 (SkylakeX 0.83); with the class head's cosine zeroed 0.500
    assert preference > 0.7
