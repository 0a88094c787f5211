"""SigLIP's sigmoid loss against a float64 PyTorch rewrite of the paper's pseudocode (values and
gradients with respect to both embeddings, t' and b), a NumPy double loop over the pairs, and
float64 centred differences."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def torch_siglip(img, txt, t_prime, b):
    """The paper's Figure 1 pseudocode in PyTorch."""
    x = torch.nn.functional.normalize(img, dim=-1)
    y = torch.nn.functional.normalize(txt, dim=-1)
    logits = x @ y.T * t_prime.exp() + b
    labels = 2 * torch.eye(len(img), dtype=img.dtype) - 1
    return -torch.nn.functional.logsigmoid(labels * logits).sum() / len(img)


def numpy_double_loop(img, txt, t_prime, b):
    total = 0.0
    for i in range(len(img)):
        for j in range(len(txt)):
            x = img[i] / np.linalg.norm(img[i])
            y = txt[j] / np.linalg.norm(txt[j])
            z = 1.0 if i == j else -1.0
            logit = math.exp(t_prime) * float(x @ y) + b
            total += math.log1p(math.exp(-z * logit))        # -log sigmoid(z logit)
    return total / len(img)


def inputs(n=5, d=4, seed=0, t_prime=0.7, b=-1.3):
    return randn(n, d, seed=seed), randn(n, d, seed=seed + 1), np.array(t_prime), np.array(b)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_equals_float64_torch_in_values_and_gradients(n):
    compare_with_torch(F.siglip_loss, torch_siglip, *inputs(n), dtype=np.float64, rtol=1e-10)


def test_equals_torch_in_float32_and_at_the_paper_initialisation():
    img, txt, _, _ = inputs(8, 6, seed=3)
    t0, b0 = np.array(math.log(10.0)), np.array(-10.0)
    compare_with_torch(F.siglip_loss, torch_siglip, img, txt, t0, b0)
    assert F.SIGLIP_LOG_TEMPERATURE_INIT == math.log(10.0) and F.SIGLIP_BIAS_INIT == -10.0


def test_equals_a_numpy_double_loop():
    for seed, (t_prime, b) in enumerate([(math.log(10.0), -10.0), (0.3, 2.0), (2.5, 0.0)]):
        img, txt, _, _ = inputs(4, 3, seed=10 * seed)
        got = F.siglip_loss(lamina.tensor(img, dtype=np.float64), lamina.tensor(txt, dtype=np.float64),
                            lamina.tensor(t_prime, dtype=np.float64), lamina.tensor(b, dtype=np.float64))
        np.testing.assert_allclose(float(got.numpy()), numpy_double_loop(img, txt, t_prime, b), rtol=1e-12)


def test_default_arguments_are_the_paper_initialisation():
    img, txt, _, _ = inputs(4, 3)
    got = F.siglip_loss(lamina.tensor(img, dtype=np.float64), lamina.tensor(txt, dtype=np.float64))
    np.testing.assert_allclose(float(got.numpy()), numpy_double_loop(img, txt, math.log(10.0), -10.0), rtol=1e-12)


def test_gradients_by_centred_differences_and_second_derivatives():
    assert check_gradients(F.siglip_loss, *inputs(4, 3))
    compare_double_backward_with_torch(F.siglip_loss, torch_siglip, *inputs(3, 3, seed=5))


def test_blocks_sum_to_the_whole_loss():
    """The loss split into the diagonal block and the off-diagonal blocks of a 2 x 2 tiling."""
    img, txt, t_prime, b = inputs(6, 4, seed=2)
    x = img / np.linalg.norm(img, axis=1, keepdims=True)
    y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    halves = [slice(0, 2), slice(2, 6)]
    total = sum(float(F.siglip_block_loss(lamina.tensor(x[r], dtype=np.float64), lamina.tensor(y[c], dtype=np.float64),
                                          float(t_prime), float(b), positives_on_diagonal=r == c).numpy())
                for r in halves for c in halves)
    np.testing.assert_allclose(total / 6, numpy_double_loop(img, txt, float(t_prime), float(b)), rtol=1e-12)


def test_unnormalised_option_and_logits():
    img, txt, t_prime, b = inputs(3, 4, seed=4)
    x = img / np.linalg.norm(img, axis=1, keepdims=True)
    y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    a = F.siglip_loss(lamina.tensor(x, dtype=np.float64), lamina.tensor(y, dtype=np.float64), t_prime, b,
                      normalize=False)
    np.testing.assert_allclose(float(a.numpy()), numpy_double_loop(img, txt, float(t_prime), float(b)), rtol=1e-12)
    logits = F.siglip_logits(lamina.tensor(x, dtype=np.float64), lamina.tensor(y, dtype=np.float64), t_prime, b)
    np.testing.assert_allclose(logits.numpy(), math.exp(t_prime) * x @ y.T + b, rtol=1e-12)


def test_errors_name_the_function_and_shapes():
    with pytest.raises(ShapeError, match=r"siglip_loss: image_emb has shape \(3, 4\) but text_emb has shape"):
        F.siglip_loss(randn(3, 4), randn(2, 4))
    with pytest.raises(ShapeError, match="siglip_loss: image_emb must be a batch"):
        F.siglip_loss(randn(3), randn(3))
    with pytest.raises(ShapeError, match="t_prime must be a scalar"):
        F.siglip_loss(randn(3, 4), randn(3, 4), np.zeros(2))
    with pytest.raises(ShapeError, match="siglip_block_loss: a block with positives on its diagonal must be square"):
        F.siglip_block_loss(randn(3, 4), randn(2, 4), 0.0, 0.0, positives_on_diagonal=True)
