"""Video transformers: TimeSformer's divided space-time block against a float64 torch rewrite
of the reference code (values and every gradient), the joint block against plain attention
over all tokens, frame-order (in)variance, MAC counts, tube masks, the VideoMAE targets and
loss against a torch rewrite of the reference, save/load, and two short learning runs: motion
direction (which no single frame shows) and masked-tubelet reconstruction."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina.analysis import summary
from lamina.errors import ShapeError
from lamina.models import (
    TimeSformer,
    TimeSformerBlock,
    VideoMAE,
    VideoMAEClassifier,
    sinusoid_table,
    tube_masking,
    tubelet_targets,
)
from lamina.optim import Adam


def _randomize(module, seed: int, scale: float = 0.3) -> None:
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.normal(scale=scale, size=p.shape).astype(p.dtype)


# -- torch rewrites of the reference (facebookresearch/TimeSformer, models/vit.py) ---------


def _ln(x, w, prefix):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w[prefix + ".weight"], w[prefix + ".bias"], eps=1e-6)


def _attn(x, w, prefix, heads):
    s, length, d = x.shape
    qkv = (x @ w[prefix + ".qkv.weight"] + w[prefix + ".qkv.bias"]).reshape(s, length, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
    out = (a @ v).transpose(1, 2).reshape(s, length, d)
    return out @ w[prefix + ".proj.weight"] + w[prefix + ".proj.bias"]


def _mlp(x, w, prefix=""):
    h = torch.nn.functional.gelu(x @ w[prefix + "mlp.fc1.weight"] + w[prefix + "mlp.fc1.bias"])
    return h @ w[prefix + "mlp.fc2.weight"] + w[prefix + "mlp.fc2.bias"]


def torch_divided_block(x, w, frames, heads):
    """The reference Block.forward (divided_space_time) on tokens in lamina's (t n) order; the
    reference keeps the patches in (n t) order, so they are reordered on the way in and out."""
    b, length, d = x.shape
    n, t = (length - 1) // frames, frames
    to_ref = x[:, 1:].reshape(b, t, n, d).permute(0, 2, 1, 3).reshape(b, n * t, d)
    x = torch.cat([x[:, :1], to_ref], dim=1)
    xt = x[:, 1:].reshape(b * n, t, d)                                         # b (h w t) m -> (b h w) t m
    res_temporal = _attn(_ln(xt, w, "temporal_norm1"), w, "temporal_attn", heads).reshape(b, n * t, d)
    res_temporal = res_temporal @ w["temporal_fc.weight"] + w["temporal_fc.bias"]
    xt = x[:, 1:] + res_temporal
    init_cls_token = x[:, :1]
    cls_token = init_cls_token.repeat(1, t, 1).reshape(b * t, 1, d)
    xs = xt.reshape(b, n, t, d).permute(0, 2, 1, 3).reshape(b * t, n, d)      # b (h w t) m -> (b t) (h w) m
    xs = torch.cat([cls_token, xs], dim=1)
    res_spatial = _attn(_ln(xs, w, "norm1"), w, "attn", heads)
    cls_token = res_spatial[:, 0].reshape(b, t, d).mean(dim=1, keepdim=True)
    res_spatial = res_spatial[:, 1:].reshape(b, t, n, d).permute(0, 2, 1, 3).reshape(b, n * t, d)
    x = torch.cat([init_cls_token, xt], dim=1) + torch.cat([cls_token, res_spatial], dim=1)
    x = x + _mlp(_ln(x, w, "norm2"), w)
    return torch.cat([x[:, :1], x[:, 1:].reshape(b, n, t, d).permute(0, 2, 1, 3).reshape(b, t * n, d)], dim=1)


def torch_joint_block(x, w, heads, prefix=""):
    x = x + _attn(_ln(x, w, prefix + "norm1"), w, prefix + "attn", heads)
    return x + _mlp(_ln(x, w, prefix + "norm2"), w, prefix)


def _compare_block(attention, torch_fn):
    frames, patches, dim, heads = 3, 4, 8, 2
    block = TimeSformerBlock(dim, heads, frames, attention)
    x = randn(2, 1 + frames * patches, dim, seed=1)
    block(lamina.tensor(x))
    _randomize(block, seed=2)
    weight = randn(*x.shape, seed=3)
    xl = lamina.tensor(x, requires_grad=True)
    out = block(xl)
    lamina.functional.sum(lamina.functional.mul(out, lamina.tensor(weight))).backward()
    w = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in block.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_fn(xt, w)
    (out_t * torch.tensor(weight)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-10, "block outputs")
    assert_close(np.asarray(xl.grad), xt.grad.numpy(), 1e-9, "input gradient")
    params = dict(block.named_parameters())
    assert set(params) == set(w)
    for name, p in params.items():
        assert_close(np.asarray(p.grad), w[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_divided_block_matches_the_reference_in_values_and_gradients(f64):
    _compare_block("divided", lambda x, w: torch_divided_block(x, w, 3, 2))


def test_joint_block_is_plain_attention_over_all_tokens(f64):
    _compare_block("joint", lambda x, w: torch_joint_block(x, w, 2))


@pytest.mark.parametrize("attention, shape", [("divided", (1, 5, 4)), ("joint", (1, 5, 4)), ("space", (1, 2, 3, 4))])
def test_block_gradients_match_finite_differences(f64, attention, shape):
    block = TimeSformerBlock(4, 2, 2, attention, mlp_ratio=1.0)
    block(lamina.tensor(randn(*shape)))
    _randomize(block, seed=13)
    assert check_gradients(block, randn(*shape, seed=14))


def test_space_block_attends_within_each_frame_only(f64):
    block = TimeSformerBlock(8, 2, 3, "space")
    x = randn(2, 3, 5, 8, seed=4)
    out = block(lamina.tensor(x)).numpy()
    w = {k: torch.tensor(np.asarray(v)) for k, v in block.state_dict().items()}
    expected = torch_joint_block(torch.tensor(x).reshape(6, 5, 8), w, 2).reshape(2, 3, 5, 8)
    assert_close(out, expected.numpy(), 1e-10, "space-only outputs")


def _tiny(attention, **sizes):
    options = {"dim": 8, "depth": 2, "heads": 2, "num_classes": 3, **sizes}
    return TimeSformer(4, 8, 4, 2, attention=attention, **options)


def test_frame_order_matters_to_divided_attention_only_through_the_time_embedding(f64):
    x = randn(2, 4, 8, 8, 2, seed=5)
    perm = [2, 0, 3, 1]
    outputs = {}
    for attention in ("space", "divided", "joint"):
        model = _tiny(attention)
        model(lamina.tensor(x))
        _randomize(model, seed=6)
        with lamina.no_grad():
            outputs[attention] = model(lamina.tensor(x)).numpy(), model(lamina.tensor(x[:, perm])).numpy()
            if attention != "space":
                model.time_embed.data[...] = 0
                outputs[attention + "/zero"] = model(lamina.tensor(x)).numpy(), model(lamina.tensor(x[:, perm])).numpy()
    np.testing.assert_allclose(*outputs["space"], rtol=1e-10, atol=1e-12)
    for attention in ("divided", "joint"):
        a, b = outputs[attention]
        assert np.abs(a - b).max() > 1e-3, attention                # the time embedding tells the frames apart
        np.testing.assert_allclose(*outputs[attention + "/zero"], rtol=1e-10, atol=1e-12)


def test_summary_counts_the_multiply_adds_of_each_attention():
    frames, patches, d, hidden, depth, classes, pix = 4, 4, 8, 32, 2, 3, 4 * 4 * 2
    embed, head = frames * patches * d * pix, d * classes
    spatial = frames * (patches + 1) * 4 * d * d + 2 * frames * (patches + 1) ** 2 * d
    per_block = {
        "divided": patches * frames * 4 * d * d + 2 * patches * frames ** 2 * d + frames * patches * d * d + spatial,
        "joint": (1 + frames * patches) * 4 * d * d + 2 * (1 + frames * patches) ** 2 * d,
        "space": spatial,
    }
    for attention, attn in per_block.items():
        mlp_rows = frames * (patches + 1) if attention == "space" else 1 + frames * patches
        mlp = mlp_rows * 2 * d * hidden
        got = summary(_tiny(attention), (4, 8, 8, 2)).total_macs
        assert got == embed + depth * (attn + mlp) + head, attention


# -- VideoMAE ----------------------------------------------------------------------------


def test_tube_masks_hide_the_same_positions_in_every_time_slice():
    mask = tube_masking(5, 3, 16, 0.75, rng=np.random.default_rng(0))
    assert mask.shape == (5, 48) and mask.dtype == bool
    slices = mask.reshape(5, 3, 16)
    assert (slices == slices[:, :1]).all()
    np.testing.assert_array_equal(slices.sum(axis=2), 12)
    assert len({row.tobytes() for row in slices[:, 0]}) > 1                 # drawn per clip
    np.testing.assert_array_equal(tube_masking(2, 2, 10, 0.9).sum(axis=1), 18)
    with pytest.raises(ValueError, match="at least"):
        tube_masking(1, 2, 4, 0.1)


def test_sinusoid_table_is_the_formula():
    table = sinusoid_table(7, 6)
    for pos in range(7):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            assert table[pos, j] == pytest.approx(math.sin(angle) if j % 2 == 0 else math.cos(angle), abs=1e-15)


def torch_videomae(clips, w, mask, heads, decoder_heads, t, p):
    """The reference's pre-training forward (PretrainVisionTransformer with the loss of its
    engine) on NTHWC clips: tubelet embedding, x[~mask] through the encoder, the decoder on
    [visible + pos; mask_token + pos], the head on the last M tokens, MSE to the standardised
    tubelets of the hidden positions."""
    b, frames, h, width, c = clips.shape
    kernel = w["patch_embed.proj.weight"].permute(0, 4, 1, 2, 3)                # (K, C, t, p, p)
    x = torch.nn.functional.conv3d(clips.permute(0, 4, 1, 2, 3), kernel, w["patch_embed.proj.bias"], stride=(t, p, p))
    x = x.flatten(2).transpose(1, 2) + w["pos_embed"]
    dim = x.shape[-1]
    x_vis = x[~mask].reshape(b, -1, dim)
    x_vis = torch_joint_block(x_vis, w, heads, "blocks.0.")
    x_vis = _ln(x_vis, w, "norm") @ w["encoder_to_decoder.weight"]
    pos = w["decoder_pos_embed"].expand(b, -1, -1)
    d = pos.shape[-1]
    pos_vis, pos_mask = pos[~mask].reshape(b, -1, d), pos[mask].reshape(b, -1, d)
    full = torch.cat([x_vis + pos_vis, w["mask_token"] + pos_mask], dim=1)
    full = _ln(torch_joint_block(full, w, decoder_heads, "decoder_blocks.0."), w, "decoder_norm")
    pred = full[:, -pos_mask.shape[1]:] @ w["decoder_head.weight"] + w["decoder_head.bias"]
    tubes = clips.reshape(b, frames // t, t, h // p, p, width // p, p, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    tubes = tubes.reshape(b, -1, t * p * p, c)
    tubes = (tubes - tubes.mean(dim=-2, keepdim=True)) / (tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    labels = tubes.reshape(b, -1, t * p * p * c)[mask].reshape(b, -1, t * p * p * c)
    return torch.nn.functional.mse_loss(pred, labels), pred


def test_videomae_forward_matches_the_reference_in_values_and_gradients(f64):
    model = VideoMAE(4, 8, 4, 2, 2, dim=8, depth=1, heads=2, decoder_dim=4, decoder_depth=1, decoder_heads=1,
                     mask_ratio=0.5)
    clips = randn(2, 4, 8, 8, 2, seed=11)
    mask = tube_masking(2, 2, 4, 0.5, rng=np.random.default_rng(2))
    model(lamina.tensor(clips), mask=mask)
    fixed = {"pos_embed": model.pos_embed.numpy().copy(), "decoder_pos_embed": model.decoder_pos_embed.numpy().copy()}
    _randomize(model, seed=12)
    for name, value in fixed.items():
        getattr(model, name).data[...] = value
    clips_l = lamina.tensor(clips, requires_grad=True)
    loss, pred, _ = model(clips_l, mask=mask)
    loss.backward()
    w = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in model.state_dict().items()}
    clips_t = torch.tensor(clips, requires_grad=True)
    loss_t, pred_t = torch_videomae(clips_t, w, torch.from_numpy(mask), 2, 1, 2, 4)
    loss_t.backward()
    assert_close(pred.numpy(), pred_t.detach().numpy(), 1e-10, "predictions")
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-10, "loss")
    assert_close(np.asarray(clips_l.grad), clips_t.grad.numpy(), 1e-9, "gradient of the clips")
    for name, param in model.named_parameters():
        if param.trainable:
            assert_close(np.asarray(param.grad), w[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_videomae_loss_matches_the_reference_and_ignores_visible_tubelets(f64):
    model = VideoMAE(4, 8, 4, 2, 2, dim=8, depth=1, heads=2, decoder_dim=4, decoder_depth=1, decoder_heads=1,
                     mask_ratio=0.5)
    clips = randn(2, 4, 8, 8, 2, seed=7)
    mask = tube_masking(2, 2, 4, 0.5, rng=np.random.default_rng(1))
    loss, pred, got_mask = model(lamina.tensor(clips), mask=mask)
    np.testing.assert_array_equal(got_mask, mask)
    assert pred.shape == (2, 4, 2 * 4 * 4 * 2)
    clips_t = torch.tensor(clips, requires_grad=True)
    pred_t = torch.tensor(pred.numpy(), requires_grad=True)
    b, frames, h, w, c = clips.shape
    tubes = clips_t.reshape(b, 2, 2, 2, 4, 2, 4, c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, 8, 32, c)
    tubes = (tubes - tubes.mean(dim=-2, keepdim=True)) / (tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    labels = tubes.reshape(b, 8, 32 * c)[torch.from_numpy(mask)].reshape(b, -1, 32 * c)
    loss_t = torch.nn.functional.mse_loss(pred_t, labels)
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-12, "loss")
    clips_l = lamina.tensor(clips, requires_grad=True)
    pred_l = lamina.tensor(pred.numpy(), requires_grad=True)
    model.forward_loss(clips_l, pred_l, mask).backward()
    loss_t.backward()
    assert_close(np.asarray(pred_l.grad), pred_t.grad.numpy(), 1e-10, "gradient of the predictions")
    assert_close(np.asarray(clips_l.grad), clips_t.grad.numpy(), 1e-10, "gradient of the clips")
    # the pixels of visible tubelets do not enter the loss; those of a masked one do
    tubelet = np.zeros((2, 8), bool)
    tubelet[0, np.flatnonzero(~mask[0])[0]] = True
    changed = clips + 5.0 * _tubelet_pixels(tubelet, clips.shape)
    assert model.forward_loss(lamina.tensor(changed), pred, mask).item() == pytest.approx(loss.item(), rel=1e-12)
    tubelet[0] = False
    tubelet[0, np.flatnonzero(mask[0])[0]] = True
    noise = _tubelet_pixels(tubelet, clips.shape) * randn(*clips.shape, seed=8)
    assert abs(model.forward_loss(lamina.tensor(clips + noise), pred, mask).item() - loss.item()) > 1e-3


def _tubelet_pixels(tubelets, shape):
    """A 0/1 array over the clip pixels of the chosen (batch, 8) tubelets (t = 2, p = 4, 8x8)."""
    out = np.zeros(shape)
    for b, k in zip(*np.nonzero(tubelets)):
        s, r, c = k // 4, (k % 4) // 2, k % 2
        out[b, 2 * s:2 * s + 2, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
    return out


def test_tubelet_targets_lay_out_each_tubelet_frame_row_column_channel():
    clips = np.arange(2 * 4 * 4 * 4 * 3, dtype=np.float64).reshape(2, 4, 4, 4, 3)
    targets = tubelet_targets(clips, 2, 2, normalize=False).numpy()
    assert targets.shape == (2, 2 * 2 * 2, 2 * 2 * 2 * 3)
    np.testing.assert_array_equal(targets[1, 7].reshape(2, 2, 2, 3), clips[1, 2:4, 2:4, 2:4])
    np.testing.assert_array_equal(targets[0, 2].reshape(2, 2, 2, 3), clips[0, 0:2, 2:4, 0:2])


def test_classifier_takes_the_pretrained_encoder():
    mae = VideoMAE(4, 8, 4, 2, 2, dim=8, depth=1, heads=2, decoder_dim=4, decoder_depth=1, decoder_heads=1)
    clips = randn(2, 4, 8, 8, 2, seed=9).astype(np.float32)
    mae(clips)
    classifier = VideoMAEClassifier.from_videomae(mae, num_classes=3)
    assert classifier(clips).shape == (2, 3)
    np.testing.assert_array_equal(classifier.blocks[0].attn.qkv.weight.numpy(), mae.blocks[0].attn.qkv.weight.numpy())
    features = VideoMAEClassifier.from_videomae(mae, num_classes=0)
    with lamina.no_grad():
        tokens = mae.blocks(lamina.functional.add(mae.patch_embed(lamina.tensor(clips)), mae.pos_embed))
        expected = features.fc_norm(lamina.functional.mean(tokens, axis=1)).numpy()
        np.testing.assert_allclose(features(clips).numpy(), expected, rtol=1e-6)


def test_bad_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="attention must be one of"):
        TimeSformer(4, 8, 4, attention="axial")
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        VideoMAE(3, 8, 4, 2)
    with pytest.raises(ShapeError, match="clips"):
        _tiny("divided")(np.zeros((1, 3, 8, 8, 2), np.float32))
    model = VideoMAE(4, 8, 4, 2, 2, dim=8, depth=1, heads=2, decoder_dim=4, decoder_depth=1, decoder_heads=1)
    uneven = np.zeros((2, 8), bool)
    uneven[0, :2], uneven[1, :3] = True, True
    with pytest.raises(ValueError, match="same number"):
        model(np.zeros((2, 4, 8, 8, 2), np.float32), mask=uneven)


def test_save_and_load_round_trip(tmp_path):
    model = _tiny("divided")
    x = randn(1, 4, 8, 8, 2, seed=10).astype(np.float32)
    expected = model(x).numpy()
    lamina.save(model, tmp_path / "timesformer.safetensors")
    twin = lamina.load(tmp_path / "timesformer.safetensors")
    np.testing.assert_array_equal(twin(x).numpy(), expected)


# -- learning ----------------------------------------------------------------------------


def moving_dot_clips(n: int, rng, frames: int = 4, size: int = 8):
    """Clips of one bright pixel moving 1 pixel a frame to the right (label 0) or left (1);
    the start is drawn so that both classes visit the same set of columns, so the frames
    without their order do not tell the classes apart (a left clip is a right one reversed)."""
    labels = rng.integers(0, 2, n)
    clips = np.zeros((n, frames, size, size, 1), np.float32)
    span = frames - 1
    for k, label in enumerate(labels):
        row, start = rng.integers(0, size), rng.integers(0, size - span)
        cols = start + np.arange(frames)
        for t, col in enumerate(cols if label == 0 else cols[::-1]):
            clips[k, t, row, col, 0] = 1.0
    return clips, labels


def _fit_classifier(attention: str, x, y, steps: int) -> TimeSformer:
    lamina.manual_seed(0)
    model = TimeSformer(4, 8, 4, 1, dim=16, depth=1, heads=2, num_classes=2, attention=attention, mlp_ratio=2.0)
    model(x[:1])
    optimizer = Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        loss = lamina.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_divided_attention_learns_motion_direction_that_space_only_cannot(capsys):
    rng = np.random.default_rng(0)
    x_train, y_train = moving_dot_clips(512, rng)
    x_test, y_test = moving_dot_clips(256, rng)
    accuracy = {}
    for attention in ("divided", "space"):
        model = _fit_classifier(attention, x_train, y_train, 150)
        with lamina.no_grad():
            accuracy[attention] = float((model(x_test).numpy().argmax(axis=1) == y_test).mean())
    with capsys.disabled():
        print(f"\nmotion direction: divided {accuracy['divided']:.3f}, space-only {accuracy['space']:.3f}")
    assert accuracy["divided"] > 0.9
    assert abs(accuracy["space"] - 0.5) < 0.1


def ramp_clips(n: int, rng, frames: int = 4, size: int = 8):
    """Clips a x / W + b y / H + c t / T of random slopes (a, b, c): after the per-tubelet
    standardisation every tubelet of a clip has the same target, set by the slopes, which the
    visible tubelets show."""
    t, yy, xx = np.mgrid[0:frames, 0:size, 0:size].astype(np.float32)
    a, b, c = (rng.normal(size=(n, 1, 1, 1)).astype(np.float32) for _ in range(3))
    return (a * xx / size + b * yy / size + c * t / frames)[..., None].astype(np.float32)


def test_videomae_pretraining_lowers_the_reconstruction_loss(capsys):
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    train, test = ramp_clips(256, rng), ramp_clips(64, rng)
    model = VideoMAE(4, 8, 4, 2, 1, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2,
                     mlp_ratio=2.0, mask_ratio=0.5)
    mask = tube_masking(64, 2, 4, 0.5, rng=np.random.default_rng(1))

    def test_loss():
        with lamina.no_grad():
            return model(test, mask=mask)[0].item()

    model(test[:1])
    before = test_loss()
    optimizer = Adam(model.parameters(trainable_only=True), lr=3e-3)
    for _ in range(200):
        loss, _, _ = model(train[rng.integers(0, len(train), 32)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = test_loss()
    with capsys.disabled():
        print(f"\nVideoMAE masked-tubelet loss {before:.3f} -> {after:.3f} (predicting 0: about 1)")
    assert after < 0.1 * before and after < 0.2


def test_readme_example_runs():
    printed, names = run_readme_section("Video transformers")
    lines = printed.split("\n")
    assert lines[0] == "(2, 5)" and lines[1] == "(2, 8) 6"
    assert isinstance(names["model"], TimeSformer)
