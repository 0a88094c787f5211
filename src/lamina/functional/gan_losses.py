"""The adversarial costs of the image-to-image GANs (pix2pix, CycleGAN) and StyleGAN2, on a
discriminator's raw outputs p (one logit per image, or one per patch for a PatchGAN), each
averaged over every output value:

    mode 'vanilla' (non-saturating logistic; pix2pix, StyleGAN2):
        real target: mean softplus(-p) = BCE(sigmoid p, 1),   fake target: mean softplus(p)
    mode 'lsgan' (least squares, Mao et al. 2017; CycleGAN):
        real target: mean (p - 1)^2,                            fake target: mean p^2
    mode 'wgangp' (a critic's score):
        real target: -mean p,                                   fake target: mean p

The discriminator's cost takes the real images with the real target and the generated ones
with the fake target; the generator's takes its images with the real target (the
non-saturating form for 'vanilla': -log D(G(z)), whose gradient stays large while D rejects
them).

R1 (Mescheder et al. 2018), StyleGAN2's regulariser of the discriminator on real images only:

    R1 = (1/m) sum_i ||dD(x_i)/dx_i||^2,   added to D's cost as (gamma / 2) R1

It is differentiable with respect to D's weights (the input gradient is taken with
``create_graph=True``), so every op of D needs a differentiable backward.

The hinge costs of SAGAN and BigGAN (Lim & Ye 2017; Miyato et al. 2018):

    D: mean relu(1 - D(x)) + mean relu(1 + D(G(z))),     G: -mean D(G(z))
"""

from __future__ import annotations

from lamina.autograd import Tensor, enable_grad
from lamina.errors import ShapeError
from lamina.functional.activation import relu
from lamina.functional.penalties import _squared_input_gradient_norms
from lamina.functional.smooth_activation import softplus

__all__ = ["GAN_MODES", "gan_loss", "hinge_d_loss", "hinge_g_loss", "logistic_d_loss", "logistic_g_loss",
           "r1_penalty"]

GAN_MODES = ("vanilla", "lsgan", "wgangp")


def gan_loss(prediction, target_is_real: bool, mode: str = "vanilla") -> Tensor:
    """The adversarial cost of the discriminator outputs ``prediction`` (any shape) against an
    all-real (``target_is_real=True``) or all-fake target, for ``mode`` 'vanilla', 'lsgan' or
    'wgangp' (module docstring); a scalar tensor."""
    if mode not in GAN_MODES:
        raise ValueError(f"gan_loss: mode must be one of {GAN_MODES}, got {mode!r}")
    p = prediction if isinstance(prediction, Tensor) else Tensor(prediction)
    if mode == "vanilla":
        return softplus(-p if target_is_real else p).mean()
    if mode == "lsgan":
        return ((p - 1.0) ** 2).mean() if target_is_real else (p * p).mean()
    return -p.mean() if target_is_real else p.mean()


def logistic_d_loss(real_logits, fake_logits) -> Tensor:
    """StyleGAN2's discriminator cost: mean softplus(-D(x)) + mean softplus(D(G(z)))."""
    return gan_loss(real_logits, True) + gan_loss(fake_logits, False)


def logistic_g_loss(fake_logits) -> Tensor:
    """The non-saturating generator cost: mean softplus(-D(G(z)))."""
    return gan_loss(fake_logits, True)


def hinge_d_loss(real_logits, fake_logits) -> Tensor:
    """The hinge cost of the discriminator: mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    real = real_logits if isinstance(real_logits, Tensor) else Tensor(real_logits)
    fake = fake_logits if isinstance(fake_logits, Tensor) else Tensor(fake_logits)
    return relu(1.0 - real).mean() + relu(1.0 + fake).mean()


def hinge_g_loss(fake_logits) -> Tensor:
    """The hinge generator cost: -mean D(G(z))."""
    fake = fake_logits if isinstance(fake_logits, Tensor) else Tensor(fake_logits)
    return -fake.mean()


def r1_penalty(discriminator, real) -> Tensor:
    """R1 = (1/m) sum_i ||dD(x_i)/dx_i||^2 at the real images ``real`` (m, ...), a scalar on the
    graph of ``discriminator``'s weights; ``discriminator`` maps the batch to one logit per
    image ((m,) or (m, 1)). StyleGAN2 adds (gamma / 2) R1 to the discriminator's cost."""
    values = real.data if isinstance(real, Tensor) else Tensor(real).data
    if values.ndim < 2:
        raise ShapeError(f"r1_penalty: real must be a batch (m, ...), got shape {tuple(values.shape)}")
    x = Tensor(values, requires_grad=True, dtype=values.dtype)
    with enable_grad():
        squared = _squared_input_gradient_norms(discriminator, x, "r1_penalty: the discriminator", "logit per image")
        return squared.mean()
