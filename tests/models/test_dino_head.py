"""DINO's head and loss: the head against torch (weight-normalised last layer, frozen gains),
the loss against a torch re-implementation of the reference's formula (values, gradients
with respect to the student's outputs, the centre's update, the teacher temperature
schedule), finite differences, and bad arguments."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.models import DINOHead, DINOLoss, dino_cross_entropy


def torch_head(head: DINOHead):
    """The reference's head (MLP with GELU, normalize, weight-normalised Linear) with the
    lamina head's weights; returns (module, last layer's weight_v)."""
    layers = []
    dense = [m for m in head.mlp.children() if isinstance(m, lamina.nn.Dense)]
    for k, layer in enumerate(dense):
        linear = torch.nn.Linear(*layer.weight.shape).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.numpy().T))
            linear.bias.copy_(torch.from_numpy(layer.bias.numpy()))
        layers += [linear] + ([torch.nn.GELU()] if k < len(dense) - 1 else [])
    mlp = torch.nn.Sequential(*layers)
    v = torch.tensor(head.last_layer.v.numpy().T.copy(), requires_grad=True)
    g = torch.tensor(head.last_layer.g.numpy()[:, None].copy(), requires_grad=not head.norm_last_layer)

    def forward(x):
        u = torch.nn.functional.normalize(mlp(x), dim=-1, p=2)
        return u @ (g * v / v.norm(dim=1, keepdim=True)).T

    return forward, mlp, v, g


@pytest.mark.parametrize("nlayers, norm_last", [(3, True), (1, False)])
def test_head_matches_torch(f64, nlayers, norm_last):
    lamina.manual_seed(0)
    head = DINOHead(6, 10, hidden_dim=8, bottleneck_dim=5, nlayers=nlayers, norm_last_layer=norm_last)
    head.build((None, 6))
    np.testing.assert_array_equal(head.last_layer.g.numpy(), 1.0)
    assert head.last_layer.g.trainable is not norm_last
    forward, mlp, v, g = torch_head(head)
    x = randn(4, 6, seed=1)
    out = head(lamina.tensor(x))
    out_t = forward(torch.from_numpy(x))
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-12, "head output")
    upstream = randn(4, 10, seed=2)
    lamina.functional.sum(lamina.functional.mul(out, upstream)).backward()
    (out_t * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(head.last_layer.v.grad, v.grad.numpy().T, rtol=1e-9, atol=1e-12)
    if norm_last:
        assert head.last_layer.g.grad is None
    else:
        np.testing.assert_allclose(head.last_layer.g.grad, g.grad.numpy()[:, 0], rtol=1e-9, atol=1e-12)
    dense = [m for m in head.mlp.children() if isinstance(m, lamina.nn.Dense)]
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    for ours, theirs in zip(dense, linears, strict=True):
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy().T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-9, atol=1e-12)
    norms = np.linalg.norm(head.last_layer.layer.weight.numpy(), axis=0)
    np.testing.assert_allclose(norms, head.last_layer.g.numpy(), rtol=1e-12)   # unit columns times g
    assert check_gradients(head, x)


class TorchDINOLoss:
    """The reference's DINOLoss.forward and update_center (one process)."""

    def __init__(self, out_dim, ncrops, warmup_temp, temp, warmup_epochs, nepochs, student_temp, momentum):
        self.student_temp, self.ncrops, self.momentum = student_temp, ncrops, momentum
        self.center = torch.zeros(1, out_dim, dtype=torch.float64)
        self.schedule = np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs),
                                        np.ones(nepochs - warmup_epochs) * temp))

    def __call__(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        teacher_out = torch.softmax((teacher_output - self.center) / self.schedule[epoch], dim=-1).detach().chunk(2)
        total, terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * torch.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                terms += 1
        with torch.no_grad():
            batch_center = teacher_output.sum(dim=0, keepdim=True) / len(teacher_output)
            self.center = self.center * self.momentum + batch_center * (1 - self.momentum)
        return total / terms


@pytest.mark.parametrize("ncrops", [2, 5])
def test_loss_matches_torch_over_epochs(f64, ncrops):
    batch, k = 3, 7
    args = (k, ncrops, 0.04, 0.07, 2, 4)
    ours, theirs = DINOLoss(*args, student_temp=0.1, center_momentum=0.8), TorchDINOLoss(*args, 0.1, 0.8)
    np.testing.assert_allclose(ours.teacher_temp_schedule, theirs.schedule, rtol=1e-15)
    for epoch in range(4):
        teacher = randn(2 * batch, k, seed=10 + epoch)
        compare_with_torch(lambda s, t, e=epoch: ours(s, t, e), lambda s, t, e=epoch: theirs(s, t, e),
                           randn(ncrops * batch, k, seed=epoch), teacher, dtype=np.float64, grad=[True, False])
        # each loss ran once: the centres moved in step
        np.testing.assert_allclose(ours.center, theirs.center.numpy(), rtol=1e-12, atol=1e-15)
    assert np.abs(ours.center).max() > 0


def test_center_is_the_ema_of_teacher_means(f64):
    loss = DINOLoss(4, 2, 0.04, 0.04, 0, 1, center_momentum=0.9)
    first, second = randn(6, 4, seed=1), randn(6, 4, seed=2)
    loss(lamina.tensor(randn(6, 4, seed=3)), first)
    loss(lamina.tensor(randn(6, 4, seed=4)), second)
    expected = 0.9 * (0.1 * first.mean(axis=0)) + 0.1 * second.mean(axis=0)
    np.testing.assert_allclose(loss.center[0], expected, rtol=1e-12)
    loss.eval()
    loss(lamina.tensor(randn(6, 4, seed=5)), randn(6, 4, seed=6))
    np.testing.assert_allclose(loss.center[0], expected, rtol=1e-12)      # evaluation leaves it


def test_cross_entropy_gradient(f64):
    targets = np.random.default_rng(0).dirichlet(np.ones(5), size=4)
    assert check_gradients(lambda s: dino_cross_entropy(s, targets, 3), randn(6, 5, seed=7))


def test_bad_arguments():
    with pytest.raises(ValueError, match="ncrops"):
        DINOLoss(4, 1, 0.04, 0.04, 0, 3)
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs"):
        DINOLoss(4, 2, 0.04, 0.07, 5, 3)
    loss = DINOLoss(4, 3, 0.04, 0.04, 0, 3)
    with pytest.raises(ShapeError, match="crops"):
        loss(lamina.tensor(randn(7, 4)), randn(4, 4))
    with pytest.raises(ShapeError, match="global crops"):
        loss(lamina.tensor(randn(6, 4)), randn(6, 4))
    with pytest.raises(ValueError, match="outside the schedule"):
        loss(lamina.tensor(randn(6, 4)), randn(4, 4), epoch=3)
    with pytest.raises(ShapeError, match="in_dim"):
        DINOHead(6, 10, 8, 5)(lamina.tensor(randn(2, 5)))
