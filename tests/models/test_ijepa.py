"""I-JEPA: the multi-block masks (block sizes within the scale and aspect ranges, rectangles,
context without target patches, equal counts, seeding), the predictor and the whole loss
against a float64 torch re-implementation of the reference (values and every gradient), the
loss options, the stopped gradient of the target encoder, the EMA update and its schedule,
and saving by config."""

import numpy as np
import pytest
import torch
import torch_timm_zoo as tt
import torch_zoo
from timm_checks import torch_layout

import lamina
from helpers import assert_close, randn
from lamina.models import (
    IJEPA,
    IJEPAPredictor,
    ema_momentum_schedule,
    ijepa_loss,
    load_timm_state_dict,
    multiblock_masks,
    sincos_position_embedding,
)


# -- masks -----------------------------------------------------------------------------------
def _block_shape(indices, cols):
    rows, columns = np.divmod(indices, cols)
    h, w = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
    return int(h), int(w)


@pytest.mark.parametrize("seed", range(6))
def test_masks_are_blocks_within_the_ranges(seed):
    grid, scale, aspect = (14, 12), (0.15, 0.2), (0.75, 1.5)
    masks = multiblock_masks(5, grid, num_targets=4, target_scale=scale, target_aspect=aspect,
                             context_scale=(0.85, 1.0), min_keep=4, rng=seed)
    assert masks.targets.shape[:2] == (4, 5) and masks.context.shape[0] == 5
    h, w = masks.target_block
    area = grid[0] * grid[1]
    slack = (h + w) / 2 + 1                              # rounding h and w to whole patches
    assert scale[0] * area - slack <= h * w <= scale[1] * area + slack
    assert aspect[0] - 1.0 / min(h, w) <= h / w <= aspect[1] + 1.0 / min(h, w)
    ch, cw = masks.context_block
    assert ch == cw or (ch > cw == grid[1])                  # a square context block, cut to the grid
    assert ch * cw <= area and (ch != cw or 0.85 * area - ch - 1 <= ch * cw)
    for m in range(4):
        for i in range(5):
            block = masks.targets[m, i]
            assert len(np.unique(block)) == h * w and _block_shape(block, grid[1]) == (h, w)   # a full rectangle
    for i in range(5):
        context = masks.context[i]
        assert np.all(np.diff(context) > 0) and len(context) >= 4
        assert not np.intersect1d(context, masks.targets[:, i]).size              # no target patch in the context
        assert _block_shape(context, grid[1])[0] <= ch and _block_shape(context, grid[1])[1] <= cw


def test_masks_are_seeded_and_trimmed_to_the_smallest_context():
    a = multiblock_masks(8, 8, num_targets=3, rng=np.random.default_rng(3))
    b = multiblock_masks(8, 8, num_targets=3, rng=3)
    c = multiblock_masks(8, 8, num_targets=3, rng=4)
    np.testing.assert_array_equal(a.context, b.context)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert a.context.shape != c.context.shape or not np.array_equal(a.context, c.context)
    # without trimming the contexts differ in size: the trim keeps each image's first K patches
    sizes = []
    for seed in range(20):
        masks = multiblock_masks(6, 8, num_targets=3, rng=seed)
        assert masks.context.dtype == np.int64 and masks.targets.dtype == np.int64
        sizes.append(masks.context.shape[1])
    assert len(set(sizes)) > 1


def test_masks_reject_impossible_requests():
    with pytest.raises(ValueError, match="min_keep"):
        multiblock_masks(2, 4, num_targets=4, target_scale=(0.9, 1.0), min_keep=4, rng=0, tries=3)
    with pytest.raises(ValueError, match="target_scale"):
        multiblock_masks(2, 4, target_scale=(0.3, 0.2))


# -- a torch re-implementation of the reference ----------------------------------------------
def _torch_sincos(dim, grid):
    return torch.from_numpy(sincos_position_embedding(dim, grid)).reshape(1, grid[0] * grid[1], dim)


def _gather(x, ids):
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))


class TorchEncoder(torch.nn.Module):
    def __init__(self, patch, chans, dim, depth, heads, grid):
        super().__init__()
        self.patch_embed = tt.PatchEmbed(patch, chans, dim)
        self.pos_embed = torch.nn.Parameter(_torch_sincos(dim, grid), requires_grad=False)
        self.blocks = torch.nn.ModuleList([tt.Block(dim, heads, 2 * dim) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, ids=None):
        x = self.patch_embed(x) + self.pos_embed
        if ids is not None:
            x = _gather(x, ids)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TorchPredictor(torch.nn.Module):
    def __init__(self, dim, pdim, depth, heads, grid):
        super().__init__()
        self.predictor_embed = torch.nn.Linear(dim, pdim)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, pdim))
        self.pos_embed = torch.nn.Parameter(_torch_sincos(pdim, grid), requires_grad=False)
        self.predictor_blocks = torch.nn.ModuleList([tt.Block(pdim, heads, 2 * pdim) for _ in range(depth)])
        self.predictor_norm = torch.nn.LayerNorm(pdim, eps=1e-6)
        self.predictor_proj = torch.nn.Linear(pdim, dim)

    def forward(self, context, context_ids, target_ids):
        n = context.shape[0]
        pos = self.pos_embed.expand(n, -1, -1)
        x = self.predictor_embed(context) + _gather(pos, context_ids)
        x = torch.cat([x] * len(target_ids))                                  # one copy per target block
        queries = torch.cat([_gather(pos, ids) for ids in target_ids]) + self.mask_token
        x = torch.cat([x, queries], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        out = self.predictor_proj(self.predictor_norm(x)[:, context.shape[1]:])
        return out.reshape(len(target_ids), n, -1, out.shape[-1])


class TorchIJEPA(torch.nn.Module):
    def __init__(self, patch, chans, dim, depth, heads, pdim, pdepth, grid):
        super().__init__()
        self.context_encoder = TorchEncoder(patch, chans, dim, depth, heads, grid)
        self.target_encoder = TorchEncoder(patch, chans, dim, depth, heads, grid)
        self.predictor = TorchPredictor(dim, pdim, pdepth, heads, grid)

    def forward(self, x, context_ids, target_ids, loss="mse"):
        with torch.no_grad():
            h = self.target_encoder(x)
            h = torch.nn.functional.layer_norm(h, (h.shape[-1],))          # no scale or shift, eps 1e-5
            targets = torch.stack([_gather(h, ids) for ids in target_ids])
        pred = self.predictor(self.context_encoder(x, context_ids), context_ids, target_ids)
        if loss == "smooth_l1":
            return torch.nn.functional.smooth_l1_loss(pred, targets), pred
        distance = (pred - targets) ** 2 if loss == "mse" else (pred - targets).abs()
        return distance.mean(), pred


SIZES = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=8, depth=2, num_heads=2, predictor_embed_dim=4,
             predictor_depth=2, predictor_num_heads=2, mlp_ratio=2.0)


def _pair(loss="mse", seed=3):
    model = IJEPA(**SIZES, loss=loss)
    model.build((None, 8, 8, 3))
    reference = TorchIJEPA(2, 3, 8, 2, 2, 4, 2, (4, 4)).double()
    with torch.no_grad():
        fixed = {name: p.clone() for name, p in reference.named_parameters() if name.endswith("pos_embed")}
        torch_zoo.randomize(reference, seed=seed)
        for name, p in reference.named_parameters():
            if name in fixed:
                p.copy_(fixed[name])
    load_timm_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("loss", ["mse", "l1", "smooth_l1"])
def test_loss_and_predictions_match_torch_reference(f64, loss):
    model, reference = _pair(loss)
    x = randn(3, 8, 8, 3, seed=4)
    masks = multiblock_masks(3, 4, num_targets=3, target_scale=(0.1, 0.2), min_keep=3, rng=5)
    x_t = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    ctx_t, tgt_t = torch.from_numpy(masks.context), torch.from_numpy(masks.targets)
    loss_t, pred_t = reference(x_t, ctx_t, tgt_t, loss)
    pred = model.predict(lamina.tensor(x), masks.context, masks.targets)
    assert pred.shape == tuple(masks.targets.shape) + (8,)
    for m in range(3):                                               # each target block's predictions
        assert_close(pred.numpy()[m], pred_t.detach().numpy()[m], 1e-10, f"predictions of block {m}")
    value = model(lamina.tensor(x), masks=masks)
    assert_close(value.numpy(), loss_t.detach().numpy(), 1e-10, "loss")
    value.backward()
    loss_t.backward()
    theirs = dict(reference.named_parameters())
    assert {name for name, _ in model.named_parameters()} == set(theirs)
    largest = max(float(p.grad.abs().max()) for p in reference.parameters() if p.grad is not None)
    checked = 0
    for name, p in model.named_parameters():
        if name.startswith("target_encoder") or name.endswith("pos_embed"):
            assert p.grad is None and theirs[name].grad is None, name          # no gradient reaches the targets
            continue
        expected = torch_layout(theirs[name].grad.numpy(), p.shape)
        np.testing.assert_allclose(p.grad, expected, rtol=1e-9, atol=1e-9 * largest, err_msg=f"gradient of {name}")
        checked += 1
    assert checked == 28 + 31                      # context encoder and predictor


def test_predictor_gradient_with_respect_to_context_tokens(f64):
    lamina.manual_seed(2)
    predictor = IJEPAPredictor(4, embed_dim=8, predictor_embed_dim=4, depth=1, num_heads=2, mlp_ratio=2.0)
    masks = multiblock_masks(2, 4, num_targets=2, min_keep=3, rng=1)
    context = randn(2, masks.context.shape[1], 8, seed=6)
    reference = TorchPredictor(8, 4, 1, 2, (4, 4)).double()
    predictor(lamina.tensor(context), context_indices=masks.context, target_indices=masks.targets)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if not name.endswith("pos_embed"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.3)
    load_timm_state_dict(predictor, reference.state_dict())
    weights = randn(2, 2, masks.targets.shape[2], 8, seed=7)
    tokens = lamina.tensor(context, requires_grad=True)
    out = predictor(tokens, context_indices=masks.context, target_indices=masks.targets)
    lamina.functional.sum(lamina.functional.mul(out, weights)).backward()
    tokens_t = torch.tensor(context, requires_grad=True)
    out_t = reference(tokens_t, torch.from_numpy(masks.context), torch.from_numpy(masks.targets))
    (out_t * torch.from_numpy(weights)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-10, "predictions")
    assert_close(tokens.grad.numpy() if hasattr(tokens.grad, "numpy") else tokens.grad, tokens_t.grad.numpy(), 1e-9,
                 "gradient of the context tokens")


def test_loss_function_matches_torch_and_rejects_bad_input():
    p, t = randn(2, 3, 4, 5, seed=1), randn(2, 3, 4, 5, seed=2)
    np.testing.assert_allclose(ijepa_loss(p, t).numpy(), torch.nn.functional.mse_loss(torch.tensor(p),
                                                                                       torch.tensor(t)).numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(ijepa_loss(p, t, "l1").numpy(), torch.nn.functional.l1_loss(torch.tensor(p),
                                                                                           torch.tensor(t)).numpy(),
                               rtol=1e-6)
    smooth = torch.nn.functional.smooth_l1_loss(torch.tensor(p), torch.tensor(t)).numpy()
    np.testing.assert_allclose(ijepa_loss(p, t, "smooth_l1").numpy(), smooth, rtol=1e-6)
    with pytest.raises(ValueError, match="loss must be"):
        ijepa_loss(p, t, "huber")
    with pytest.raises(lamina.errors.ShapeError, match="differ"):
        ijepa_loss(p, t[:1])


# -- the target encoder ----------------------------------------------------------------------
def test_target_starts_as_a_frozen_copy_and_follows_the_ema_formula(f64):
    model, _ = _pair()
    lamina.manual_seed(0)
    fresh = IJEPA(**SIZES)
    fresh.build((None, 8, 8, 3))
    context, target = fresh.context_encoder.state_dict(), fresh.target_encoder.state_dict()
    assert all(np.array_equal(context[k], target[k]) for k in context)
    assert not any(p.trainable for p in fresh.target_encoder.parameters())
    before_target = {k: v.copy() for k, v in model.target_encoder.state_dict().items()}
    source = model.context_encoder.state_dict()
    model.update_target(0.9)
    after = model.target_encoder.state_dict()
    for key, value in after.items():
        np.testing.assert_allclose(value, 0.9 * before_target[key] + 0.1 * source[key], rtol=1e-12, err_msg=key)
    with pytest.raises(ValueError, match="momentum"):
        model.update_target(1.5)


def test_momentum_schedule_is_linear_from_start_to_end():
    schedule = ema_momentum_schedule(0.996, 1.0, 5)
    np.testing.assert_allclose(schedule, 0.996 + np.arange(5) * 0.004 / 5)
    with pytest.raises(ValueError, match="start"):
        ema_momentum_schedule(1.2, 1.0, 3)


def test_saved_and_loaded_model_gives_the_same_loss(tmp_path):
    lamina.manual_seed(1)
    model = IJEPA(**SIZES, loss="l1")
    x = randn(2, 8, 8, 3, seed=3)
    masks = multiblock_masks(2, 4, num_targets=2, min_keep=3, rng=2)
    model(lamina.tensor(x), masks=masks)
    model.update_target(0.5)                         # the target is no longer the context encoder's copy
    lamina.save(model, tmp_path / "ijepa.safetensors")
    twin = lamina.load(tmp_path / "ijepa.safetensors")
    assert type(twin) is IJEPA and twin.get_config() == model.get_config()
    state, twin_state = model.state_dict(), twin.state_dict()
    assert all(np.array_equal(state[k], twin_state[k]) for k in state)
    np.testing.assert_array_equal(twin(lamina.tensor(x), masks=masks).numpy(),
                                  model(lamina.tensor(x), masks=masks).numpy())
