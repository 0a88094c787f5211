"""SlotAttentionAutoEncoder: outputs and gradients against a torch re-implementation, masks that
share out each pixel, slots that follow a permutation of their initial values, and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import set_references as ref
from helpers import assert_close, compare_with_torch, randn
from lamina import models
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, H, W, C, SLOTS, WIDTH = 2, 5, 4, 3, 3, 4
OPTIONS = {"num_slots": SLOTS, "image_channels": C, "channels": WIDTH, "iters": 2, "hidden_dim": 5,
           "encoder_layers": 1, "decoder_layers": 1, "kernel_size": 3}


def _model():
    model = models.SlotAttentionAutoEncoder((H, W), **OPTIONS)
    model(randn(N, H, W, C), seed=0)
    return model.double()


def conv(p, name, x, relu=True):
    """A 'same' convolution of NHWC x with lamina's (K, f, f, c_in) weights."""
    weight = p[f"{name}.weight"].permute(0, 3, 1, 2)
    y = TF.conv2d(x.permute(0, 3, 1, 2), weight, p[f"{name}.bias"], padding="same").permute(0, 2, 3, 1)
    return torch.relu(y) if relu else y


def grid(h, w):
    y, x = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64),
                          indexing="ij")
    return torch.stack([y, x, 1 - y, 1 - x], dim=-1)


def torch_autoencoder(p, images, slots):
    x = conv(p, "encoder.0", images)
    x = (x + ref.linear(p, "encoder_position.dense", grid(H, W))).reshape(N, H * W, WIDTH)
    x = ref.linear(p, "mlp_out", torch.relu(ref.linear(p, "mlp_hidden", ref.layer_norm(p, "norm", x))))
    inner = {k[len("slot_attention."):]: v for k, v in p.items() if k.startswith("slot_attention.")}
    slots = ref.slot_attention(inner, x, slots, 2)
    y = slots.reshape(N * SLOTS, 1, 1, WIDTH).expand(-1, H, W, -1)
    y = conv(p, "decoder.0", y + ref.linear(p, "decoder_position.dense", grid(H, W)))
    out = conv(p, "output", y, relu=False).reshape(N, SLOTS, H, W, C + 1)
    images, masks = out[..., :C], torch.softmax(out[..., C:], dim=1)
    return [(images * masks).sum(dim=1), images, masks]


def test_autoencoder_matches_torch():
    model = _model()
    names, values = ref.named_values(model, seed=60)

    def ours(images, slots, *params):
        out = functional_call(model, dict(zip(names, params)), images, slots=slots)
        return [out.reconstruction, out.slot_images, out.masks]

    def theirs(images, slots, *params):
        return torch_autoencoder(dict(zip(names, params)), images, slots)

    # as in SlotAttention alone, the bias of the slots' norm moves no score between slots
    wants = [True, True] + [name != "slot_attention.norm_slots.bias" for name in names]
    compare_with_torch(ours, theirs, randn(N, H, W, C, seed=1), randn(N, SLOTS, WIDTH, seed=2), *values,
                       dtype=np.float64, grad=wants)


def test_masks_share_out_the_pixels_and_follow_the_slots():
    model = _model()
    images, slots = ref.f64(randn(N, H, W, C, seed=1)), randn(N, SLOTS, WIDTH, seed=2)
    out = model(images, slots=ref.f64(slots))
    assert_close(out.masks.numpy().sum(axis=1), np.ones((N, H, W, 1)), 1e-12, "masks summed over the slots")
    combined = (out.slot_images.numpy() * out.masks.numpy()).sum(axis=1)
    assert_close(out.reconstruction.numpy(), combined, 1e-12, "reconstruction")
    order = np.array([1, 2, 0])
    again = model(images, slots=ref.f64(slots[:, order]))
    assert_close(again.masks.numpy(), out.masks.numpy()[:, order], 1e-10, "masks of permuted slots")
    assert_close(again.slot_images.numpy(), out.slot_images.numpy()[:, order], 1e-10, "slot images")
    assert_close(again.reconstruction.numpy(), out.reconstruction.numpy(), 1e-10, "reconstruction")


def test_errors_name_the_model():
    model = _model()
    with pytest.raises(ShapeError, match=r"SlotAttentionAutoEncoder.*\(2, 4, 5, 3\).*\(batch, 5, 4, 3\)"):
        model(randn(N, W, H, C), seed=0)
    with pytest.raises(ValueError, match="SlotAttentionAutoEncoder: resolution must be"):
        models.SlotAttentionAutoEncoder((4, 4, 4))
