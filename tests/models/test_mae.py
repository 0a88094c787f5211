"""Masked autoencoders: the sin-cos position table against its formula, masking, patchify,
the whole forward (encoder, decoder, loss) against a torch re-implementation of the
reference with the same weights and noise (values and every gradient, float64), finite
differences, the classifier readout, the presets' parameter counts, bad arguments, and a
tiny MAE learning on the digits."""

import numpy as np
import pytest
import torch
import torch_timm_zoo as tt
import torch_zoo
from timm_checks import torch_layout

import lamina
from helpers import assert_close, check_gradients, randn
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import (
    MAEClassifier,
    MaskedAutoencoderViT,
    load_timm_state_dict,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    masking_indices,
    patchify,
    random_masking,
    sincos_position_embedding,
    unpatchify,
)
from lamina.nn import init
from lamina.optim import AdamW
from lamina.train import linear_probe


def test_sincos_table_is_the_formula():
    dim, rows, cols = 16, 3, 5
    table = sincos_position_embedding(dim, (rows, cols), cls_token=True)
    assert table.shape == (1 + rows * cols, dim)
    np.testing.assert_array_equal(table[0], 0.0)
    q = dim // 4
    for token in range(rows * cols):
        i, j = divmod(token, cols)
        for k in range(q):
            w = 10000.0 ** (-k / q)
            expected = [np.sin(j * w), np.cos(j * w), np.sin(i * w), np.cos(i * w)]
            np.testing.assert_allclose(table[1 + token, [k, q + k, 2 * q + k, 3 * q + k]], expected, rtol=1e-14,
                                       atol=1e-15)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_position_embedding(10, 3)


@pytest.mark.parametrize("length, ratio", [(16, 0.75), (16, 0.7), (10, 0.8), (196, 0.75), (7, 0.0)])
def test_masking_keeps_the_truncated_share_and_restores_the_order(length, ratio):
    keep = int(length * (1 - ratio))                   # the reference's len_keep: 16 x 0.3 keeps 4
    x = randn(3, length, 4, seed=length).astype(np.float32)
    lamina.manual_seed(length)
    masked, mask, ids_restore = random_masking(x, ratio)
    assert masked.shape == (3, keep, 4)
    np.testing.assert_array_equal(mask.sum(axis=1), length - keep)
    for n in range(3):
        kept = np.flatnonzero(mask[n] == 0)
        assert sorted(kept.tolist()) == sorted(ids_restore[n].argsort()[:keep].tolist())
        np.testing.assert_array_equal(masked.numpy()[n], x[n, ids_restore[n].argsort()[:keep]])
    noise = np.random.default_rng(1).random((3, length))
    ids_keep, ids_restore, mask = masking_indices(3, length, ratio, noise)
    shuffle = np.argsort(noise, axis=1)
    np.testing.assert_array_equal(ids_keep, shuffle[:, :keep])
    np.testing.assert_array_equal(np.take_along_axis(shuffle, ids_restore, axis=1), np.tile(np.arange(length), (3, 1)))
    removed_last = np.tile(np.arange(length) >= keep, (3, 1))                 # the shuffled order's mask
    np.testing.assert_array_equal(mask, np.take_along_axis(removed_last, ids_restore, axis=1) * 1.0)


def test_patchify_layout_round_trip_and_gradients(f64):
    x = randn(2, 6, 4, 3, seed=2)
    patches = patchify(x, 2).numpy()
    assert patches.shape == (2, 6, 12)
    np.testing.assert_array_equal(patches[1, 4], x[1, 4:6, 0:2].reshape(-1))        # row 2, column 0
    np.testing.assert_array_equal(unpatchify(patches, 2, (6, 4)).numpy(), x)
    assert check_gradients(lambda a: patchify(a, 2), x)
    assert check_gradients(lambda a: unpatchify(a, 2, (6, 4)), patches)
    with pytest.raises(ShapeError, match="multiples of the patch size"):
        patchify(x, 4)


# -- the torch re-implementation of the reference ---------------------------------------------


def torch_sincos(dim: int, grid: int) -> torch.Tensor:
    """The reference's get_2d_sincos_pos_embed, with a zero class-token row."""
    coords = torch.arange(grid, dtype=torch.float64)
    w_coord, h_coord = torch.meshgrid(coords, coords, indexing="xy")

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = torch.einsum("m,d->md", pos.reshape(-1), omega)
        return torch.cat([out.sin(), out.cos()], dim=1)

    table = torch.cat([one_axis(dim // 2, w_coord), one_axis(dim // 2, h_coord)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table])[None]


class TorchMAE(torch.nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads, ddim, ddepth, dheads, mlp_ratio, norm_pix):
        super().__init__()
        self.patch, self.norm_pix = patch, norm_pix
        grid = img // patch
        self.patch_embed = tt.PatchEmbed(patch, chans, dim)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = torch.nn.Parameter(torch_sincos(dim, grid), requires_grad=False)
        self.blocks = torch.nn.ModuleList([tt.Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = torch.nn.Linear(dim, ddim)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = torch.nn.Parameter(torch_sincos(ddim, grid), requires_grad=False)
        self.decoder_blocks = torch.nn.ModuleList([tt.Block(ddim, dheads, int(ddim * mlp_ratio))
                                                   for _ in range(ddepth)])
        self.decoder_norm = torch.nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = torch.nn.Linear(ddim, patch * patch * chans)

    def patchify(self, imgs):
        n, c, h, w = imgs.shape
        p = self.patch
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def forward(self, imgs, noise, mask_ratio):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        n, length, dim = x.shape
        keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].repeat(1, 1, dim))
        mask = torch.ones(n, length, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_embed(self.norm(x))
        tokens = self.mask_token.repeat(n, length + 1 - x.shape[1], 1)
        rest = torch.gather(torch.cat([x[:, 1:], tokens], dim=1), 1, ids_restore[..., None].repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], rest], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        target = self.patchify(imgs)
        if self.norm_pix:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum(), pred, mask


SIZES = (8, 2, 3, 8, 2, 2, 12, 1, 3, 2.0)   # img, patch, chans, dim, depth, heads, decoder dim/depth/heads, mlp


@pytest.mark.parametrize("norm_pix, ratio", [(False, 0.75), (True, 0.5)])
def test_forward_matches_torch_reference(f64, norm_pix, ratio):
    model = MaskedAutoencoderViT(*SIZES, norm_pix_loss=norm_pix)
    reference = TorchMAE(*SIZES, norm_pix).double()
    with torch.no_grad():
        fixed = {"pos_embed": reference.pos_embed.clone(), "decoder_pos_embed": reference.decoder_pos_embed.clone()}
        torch_zoo.randomize(reference, seed=3)
        for name, value in fixed.items():
            getattr(reference, name).copy_(value)
    model.build((None, 8, 8, 3))
    np.testing.assert_allclose(model.pos_embed.numpy(), fixed["pos_embed"].numpy(), rtol=1e-6, atol=1e-7)
    load_timm_state_dict(model, reference.state_dict())
    x, noise = randn(2, 8, 8, 3, seed=4), np.random.default_rng(5).random((2, 16))
    loss, pred, mask = model(lamina.tensor(x), ratio, noise)
    loss_t, pred_t, mask_t = reference(torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(noise), ratio)
    np.testing.assert_array_equal(mask, mask_t.numpy())
    assert_close(pred.numpy(), pred_t.detach().numpy(), 1e-10, "predictions")
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-10, "loss")
    loss.backward()
    loss_t.backward()
    theirs = dict(reference.named_parameters())
    assert {name for name, _ in model.named_parameters()} == set(theirs)
    largest = max(float(p.grad.abs().max()) for p in reference.parameters() if p.grad is not None)
    for name, p in model.named_parameters():
        if not p.trainable:
            assert p.grad is None and theirs[name].grad is None, name
            continue
        expected = torch_layout(theirs[name].grad.numpy(), p.shape)
        np.testing.assert_allclose(p.grad, expected, rtol=1e-9, atol=1e-9 * largest, err_msg=f"gradient of {name}")


def test_loss_gradient_with_respect_to_images(f64):
    lamina.manual_seed(6)
    model = MaskedAutoencoderViT(4, 2, 1, 8, 1, 2, 8, 1, 2, mlp_ratio=1.0, norm_pix_loss=True)
    model.build((None, 4, 4, 1))
    noise = np.random.default_rng(7).random((2, 4))
    assert check_gradients(lambda x: model(x, 0.5, noise)[0], randn(2, 4, 4, 1, seed=8))


def test_classifier_readouts(f64):
    lamina.manual_seed(9)
    mae = MaskedAutoencoderViT(*SIZES)
    mae.build((None, 8, 8, 3))
    x = lamina.tensor(randn(3, 8, 8, 3, seed=10))
    latent, _, _ = mae.forward_encoder(x, mask_ratio=0.0)
    cls_features = MAEClassifier.from_mae(mae, num_classes=0, global_pool=False)(x)
    np.testing.assert_allclose(cls_features.numpy(), latent.numpy()[:, 0], rtol=1e-10, atol=1e-12)
    pooled = MAEClassifier.from_mae(mae, num_classes=5, global_pool=True)
    z = mae.blocks(lamina.functional.concat([mae._class_token(3), mae._patch_tokens(x)], axis=1)).numpy()
    expected = pooled.head(pooled.fc_norm(lamina.tensor(z[:, 1:].mean(axis=1)))).numpy()
    np.testing.assert_allclose(pooled(x).numpy(), expected, rtol=1e-10)
    assert pooled.pos_embed.trainable and not mae.pos_embed.trainable
    small = MAEClassifier(4, 2, 1, 8, 1, 2, mlp_ratio=1.0, num_classes=3, global_pool=True)
    small.build((None, 4, 4, 1))
    assert check_gradients(small, randn(2, 4, 4, 1, seed=11))
    with pytest.raises(ValueError, match="no weights"):
        MAEClassifier.from_mae(MaskedAutoencoderViT(*SIZES))


@pytest.mark.parametrize("builder, count", [(mae_vit_base_patch16, 111_907_840), (mae_vit_large_patch16, 329_541_888),
                                            (mae_vit_huge_patch14, 657_074_508)])
def test_preset_parameter_counts(builder, count):
    with init.meta():
        model = builder()
        model.build(model.input_shape)
    assert model.num_parameters() == count
    grid = 224 // model.patch_size
    fixed = (grid * grid + 1) * (model.embed_dim + model.decoder_embed_dim)
    assert model.num_parameters(trainable_only=True) == count - fixed


def test_bad_arguments():
    model = MaskedAutoencoderViT(8, 2, 1, 8, 1, 2, 8, 1, 2)
    with pytest.raises(ValueError, match="mask_ratio"):
        model(lamina.tensor(randn(1, 8, 8, 1)), mask_ratio=1.0)
    with pytest.raises(ShapeError, match="expected NHWC images"):
        model(lamina.tensor(randn(1, 8, 8, 3)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MaskedAutoencoderViT(10, 4, 1, 8, 1, 2, 8, 1, 2)
    with pytest.raises(ShapeError, match="noise"):
        masking_indices(2, 4, 0.5, np.zeros((2, 5)))


def test_tiny_mae_learns_digits(capsys):
    """Masked reconstruction falls well below predicting the mean patch, and a linear probe on
    the pretrained encoder beats one on the same encoder at its random start."""
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(0).permutation(len(x))
    x_train, y_train, x_test, y_test = x[order[:1200]], y[order[:1200]], x[order[1200:]], y[order[1200:]]
    model = MaskedAutoencoderViT(8, 4, 1, 16, 2, 2, 16, 1, 2, mlp_ratio=2.0)
    model.build((None, 8, 8, 1))
    random_encoder = MAEClassifier.from_mae(model, num_classes=0, global_pool=True)
    noise = np.random.default_rng(1).random((len(x_test), model.num_patches))

    def masked_loss():
        with lamina.no_grad():
            loss, _, mask = model(lamina.tensor(x_test), 0.5, noise)
        return loss.item(), mask

    before, mask = masked_loss()
    mean_patch = patchify(x_train, 4).numpy().mean(axis=0)
    baseline = float((((patchify(x_test, 4).numpy() - mean_patch) ** 2).mean(axis=-1) * mask).sum() / mask.sum())
    optimizer = AdamW(model.parameters(trainable_only=True), lr=3e-3, weight_decay=0.05)
    rng = np.random.default_rng(2)
    for _ in range(1000):
        loss, _, _ = model(lamina.tensor(x_train[rng.integers(0, len(x_train), 32)]), 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, _ = masked_loss()
    probe = linear_probe(MAEClassifier.from_mae(model, num_classes=0, global_pool=True), (x_train, y_train),
                         (x_test, y_test), epochs=100)["test_accuracy"]
    chance = linear_probe(random_encoder, (x_train, y_train), (x_test, y_test), epochs=100)["test_accuracy"]
    few = np.concatenate([np.flatnonzero(y_train == c)[:5] for c in range(10)])      # 5 labels per class
    few_probe, few_chance = (linear_probe(encoder, (x_train[few], y_train[few]), (x_test, y_test),
                                          epochs=100)["test_accuracy"]
                             for encoder in (MAEClassifier.from_mae(model, 0, global_pool=True), random_encoder))
    with capsys.disabled():
        print(f"\nMAE digits: masked loss {before:.3f} -> {after:.3f} (mean patch {baseline:.3f}); probe "
              f"{probe:.3f} vs random encoder {chance:.3f}; 50 labels {few_probe:.3f} vs {few_chance:.3f}")
    assert after < 0.8 * baseline and after < 0.3 * before
    assert probe > chance + 0.02 and few_probe > few_chance + 0.02
