"""DLRM: the dot interaction against torch's bmm form, the whole model's forward and
gradients against PyTorch, the parameter count of a small configuration by hand, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, compare_with_torch
from lamina.errors import ShapeError
from lamina.models import DLRM, dot_interaction


def _torch_interaction(x, *embeddings):
    stacked = torch.stack([x, *embeddings], dim=1)                      # (B, n, d)
    z = torch.bmm(stacked, stacked.transpose(1, 2))
    n = stacked.shape[1]
    rows, cols = torch.tril_indices(n, n, offset=-1)                    # pairs i > j, row by row
    return torch.cat([x, z[:, rows, cols]], dim=1)


def test_dot_interaction_matches_torch_bmm():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(4, 3)) for _ in range(4)]
    compare_with_torch(lambda x, *e: dot_interaction(x, e), _torch_interaction, *arrays, dtype=np.float64)
    lamina.set_default_dtype(np.float64)
    out = dot_interaction(arrays[0], arrays[1:]).numpy()
    assert out.shape == (4, 3 + 6)
    assert_close(out[:, 3 + 5], np.einsum("bd,bd->b", arrays[3], arrays[2]), 1e-12, "last pair (3, 2)")
    with pytest.raises(ShapeError, match="dot_interaction: the dense vector and the embeddings must all have one"):
        dot_interaction(arrays[0], [arrays[1][:, :2]])


def test_parameter_count_by_hand():
    model = DLRM(num_dense=3, table_sizes=(5, 6, 7), dim=4, bottom=(8,), top=(8,))
    bottom = (3 * 8 + 8) + (8 * 4 + 4)
    tables = (5 + 6 + 7) * 4
    n = 4                                                    # the dense vector and 3 embeddings
    top = ((4 + n * (n - 1) // 2) * 8 + 8) + (8 * 1 + 1)
    assert model.num_parameters() == bottom + tables + top == 237


def test_forward_and_gradients_match_torch():
    lamina.set_default_dtype(np.float64)
    model = DLRM(num_dense=3, table_sizes=(5, 6), dim=4, bottom=(6,), top=(5,), mode="sum")
    rng = np.random.default_rng(1)
    for param in model.parameters():
        param.data[...] = rng.normal(0, 0.6, param.shape)
    dense = rng.normal(size=(3, 3))
    bags = np.array([[1, 4], [0, 0], [3, 2]])                           # feature 0: bags of two ids
    ids, offsets = np.array([5, 1, 2, 0]), np.array([0, 1, 1])          # feature 1: 1, 0 and 3 ids
    labels = np.array([1.0, 0.0, 1.0])
    logits = model(dense, [bags, (ids, offsets)])
    lamina.functional.binary_cross_entropy(logits, labels, from_logits=True).backward()

    p = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}

    def mlp(x, prefix, count, last_relu):
        for k in range(count):
            name = f"{prefix}.dense{'' if k == 0 else f'_{k}'}"
            x = x @ p[f"{name}.weight"] + p[f"{name}.bias"]
            x = torch.relu(x) if k < count - 1 or last_relu else x
        return x

    x = mlp(torch.tensor(dense), "bottom_mlp", 2, last_relu=True)
    e0 = TF.embedding_bag(torch.tensor(bags), p["tables.0.weight"], mode="sum")
    e1 = TF.embedding_bag(torch.tensor(ids), p["tables.1.weight"], torch.tensor(offsets), mode="sum")
    expected = mlp(_torch_interaction(x, e0, e1), "top_mlp", 2, last_relu=False)[:, 0]
    TF.binary_cross_entropy_with_logits(expected, torch.tensor(labels)).backward()
    assert_close(logits.numpy(), expected.detach().numpy(), 1e-12, "logits")
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
    one_id_each = model(dense, np.array([[1, 5], [0, 1], [3, 0]]))
    assert one_id_each.shape == (3,)


def test_errors_name_the_model():
    model = DLRM(num_dense=2, table_sizes=(3, 4), dim=2, bottom=(), top=(3,))
    dense = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"DLRM: dense features must have shape \(batch, 2\), got \(2, 3\)"):
        model(np.zeros((2, 3), dtype=np.float32), np.array([[0, 0], [1, 1]]))
    with pytest.raises(ValueError, match=r"DLRM: sparse feature 1 has id 4, out of range \[0, 4\)"):
        model(dense, np.array([[0, 4], [1, 1]]))
    with pytest.raises(ShapeError, match=r"DLRM: sparse ids as one array must have shape \(batch, 2\)"):
        model(dense, np.array([[0], [1]]))
    with pytest.raises(ShapeError, match="DLRM: sparse feature 0 gives 3 bags for a batch of 2"):
        model(dense, [np.zeros((3, 1), dtype=int), np.zeros((2, 1), dtype=int)])


def test_gradcheck_and_save_load(tmp_path):
    lamina.set_default_dtype(np.float64)
    model = DLRM(num_dense=2, table_sizes=(3, 4), dim=2, bottom=(3,), top=(3,), mode="mean")
    dense, sparse = np.random.default_rng(2).normal(size=(3, 2)), [np.array([[0, 2], [1, 1], [2, 0]]),
                                                                  np.array([[3], [0], [1]])]
    assert lamina.gradcheck(lambda *_: (model(dense, sparse) ** 2).sum(), *model.parameters())
    lamina.save(model, tmp_path / "dlrm.safetensors")
    again = lamina.load(tmp_path / "dlrm.safetensors")
    assert np.array_equal(again(dense, sparse).numpy(), model(dense, sparse).numpy())
