"""Weight averaging (SWA and EMA) and the batch-norm statistics pass, against
``torch.optim.swa_utils``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim import swa_utils

import lamina
from lamina import nn
from lamina.data import ArrayDataset, DataLoader
from lamina.errors import ShapeError
from lamina.optim import AveragedModel, update_batch_norm


def lamina_net() -> nn.Sequential:
    """conv -> batch norm -> ReLU -> global pooling -> dense -> batch norm -> dense, built."""
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.ReLU(), nn.GlobalAvgPool2D(),
                          nn.Dense(5), nn.BatchNorm(), nn.Dense(3))
    model(lamina.tensor(np.zeros((2, 6, 6, 2))))
    return model


def torch_net() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5),
                               torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)).double()


def torch_layout(a: np.ndarray) -> np.ndarray:
    """A lamina weight in torch's layout: conv (out, kh, kw, in) -> (out, in, kh, kw), dense (in, out) -> (out, in)."""
    a = np.asarray(a)
    if a.ndim == 4:
        return a.transpose(0, 3, 1, 2)
    return a.T if a.ndim == 2 else a


def lamina_state(model: nn.Module) -> list[np.ndarray]:
    """Parameters then buffers, in torch's layout."""
    return ([torch_layout(p.numpy()) for p in model.parameters()]
            + [np.asarray(b) for _, b in model.named_buffers()])


def torch_state(model: torch.nn.Module) -> list[np.ndarray]:
    """Parameters then the batch-norm running statistics (not the batch counters)."""
    return ([p.detach().numpy() for p in model.parameters()]
            + [b.numpy() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")])


def copy_to_torch(model: nn.Module, theirs: torch.nn.Module) -> None:
    targets = list(theirs.parameters()) + [b for name, b in theirs.named_buffers()
                                           if not name.endswith("num_batches_tracked")]
    with torch.no_grad():
        for target, values in zip(targets, lamina_state(model), strict=True):
            target.copy_(torch.from_numpy(np.ascontiguousarray(values)))


def randomize(model: nn.Module, rng: np.random.Generator) -> None:
    """Fresh random weights and running statistics (variances positive)."""
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape).astype(p.dtype)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm):
            layer.running_mean = rng.standard_normal(layer.running_mean.shape)
            layer.running_var = rng.uniform(0.5, 2.0, layer.running_var.shape)


def assert_states_equal(ours: list[np.ndarray], theirs: list[np.ndarray], rtol: float, what: str) -> None:
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=f"{what}: entry {k}")


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize("decay", [None, 0.0, 0.9])
def test_matches_torch_averaged_model(decay, use_buffers):
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(0)
    model, reference = lamina_net(), torch_net()
    ours = AveragedModel(model, decay=decay, use_buffers=use_buffers)
    multi_avg_fn = None if decay is None else swa_utils.get_ema_multi_avg_fn(decay)
    theirs = swa_utils.AveragedModel(reference, multi_avg_fn=multi_avg_fn, use_buffers=use_buffers)
    x = rng.standard_normal((3, 6, 6, 2))
    for step in range(1, 6):
        randomize(model, rng)
        copy_to_torch(model, reference)
        ours.update(model)
        theirs.update_parameters(reference)
        assert ours.n_averaged == int(theirs.n_averaged) == step
        assert_states_equal(lamina_state(ours.module), torch_state(theirs.module), 1e-12, f"update {step}")
    ours.eval()
    theirs.eval()
    with lamina.no_grad(), torch.no_grad():
        expected = theirs(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        np.testing.assert_allclose(ours(lamina.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_equal_average_is_the_mean_of_the_updates_and_owns_its_weights():
    rng = np.random.default_rng(1)
    model = nn.Dense(3)
    model(lamina.tensor(np.zeros((1, 4))))
    averaged = AveragedModel(model)
    seen = []
    for _ in range(4):
        model.weight.data = rng.standard_normal((4, 3)).astype(np.float32)
        seen.append(model.weight.data.copy())
        averaged.update_parameters(model)
    assert averaged.module is not model and averaged.module.weight is not model.weight
    assert averaged.module.weight.dtype == np.float32
    np.testing.assert_allclose(averaged.module.weight.data, np.mean(seen, axis=0), rtol=1e-6, atol=1e-6)
    model.weight.data[...] = 100.0                # changing the model in place leaves the average alone
    np.testing.assert_allclose(averaged.module.weight.data, np.mean(seen, axis=0), rtol=1e-6, atol=1e-6)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(averaged(lamina.tensor(x)).numpy(), x @ np.mean(seen, axis=0), rtol=1e-5, atol=1e-5)
    assert [id(p) for p in averaged.parameters()] == [id(p) for p in averaged.module.parameters()]


def test_exponential_average_follows_the_course_notes_recursion():
    rng = np.random.default_rng(2)
    model = nn.Dense(2, use_bias=False)
    model(lamina.tensor(np.zeros((1, 3))))
    averaged = AveragedModel(model, decay=0.8)
    v = None
    for _ in range(6):
        model.weight.data = rng.standard_normal((3, 2)).astype(np.float32)
        theta = model.weight.data.astype(np.float64)
        v = theta if v is None else 0.8 * v + 0.2 * theta
        averaged.update(model)
    np.testing.assert_allclose(averaged.module.weight.data, v, rtol=1e-5, atol=1e-6)


def test_state_dict_carries_the_count():
    rng = np.random.default_rng(3)
    model = lamina_net()
    averaged = AveragedModel(model)
    for _ in range(3):
        randomize(model, rng)
        averaged.update(model)
    state = averaged.state_dict()
    assert int(state["n_averaged"]) == 3 and "module.dense.weight" in state
    restored = AveragedModel(lamina_net())
    restored.load_state_dict(state)
    assert restored.n_averaged == 3
    randomize(model, rng)
    averaged.update(model)
    restored.update(model)                       # a fourth update, weighted 1/4, not a first copy
    for a, b in zip(lamina_state(restored.module), lamina_state(averaged.module), strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_built_after_the_copy_was_made():
    model = nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(2))
    averaged = AveragedModel(model)
    x = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
    model(lamina.tensor(x))
    averaged.update(model)
    with lamina.no_grad():
        np.testing.assert_array_equal(averaged(lamina.tensor(x)).numpy(), model(lamina.tensor(x)).numpy())


def test_rejects_a_different_model():
    def dense(n_in):
        layer = nn.Sequential(nn.Dense(3))
        layer(lamina.tensor(np.zeros((1, n_in))))
        return layer

    averaged = AveragedModel(dense(4))
    with pytest.raises(ShapeError, match=r"'dense\.weight'.*\(5, 3\).*\(4, 3\)"):
        averaged.update(dense(5))
    deeper = nn.Sequential(nn.Dense(3), nn.Dense(2))
    deeper(lamina.tensor(np.zeros((1, 4))))
    with pytest.raises(ValueError, match=r"not in the copy \['dense_1\.weight', 'dense_1\.bias'\]"):
        averaged.update(deeper)
    assert averaged.n_averaged == 0
    with pytest.raises(TypeError, match="AveragedModel.update: model must be a lamina Module"):
        averaged.update({"dense.weight": np.zeros((4, 3))})


@pytest.mark.parametrize("decay", [1.0, -0.1, True, "0.9"])
def test_rejects_a_bad_decay(decay):
    with pytest.raises(ValueError, match=r"AveragedModel: decay must be None .* in \[0, 1\)"):
        AveragedModel(nn.Dense(2), decay=decay)


def test_rejects_a_non_module():
    with pytest.raises(TypeError, match="AveragedModel: model must be a lamina Module, got function"):
        AveragedModel(lambda x: x)


def batches_of(x: np.ndarray, size: int):
    return [x[i:i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("form", ["array", "tuple", "loader"])
def test_update_batch_norm_matches_torch_update_bn(form):
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(5)
    model, reference = lamina_net(), torch_net()
    randomize(model, rng)                        # stale running statistics to be replaced
    copy_to_torch(model, reference)
    x = rng.standard_normal((50, 6, 6, 2)) + 0.5
    y = rng.integers(0, 3, 50)
    data = {"array": x, "tuple": (x, y),
            "loader": DataLoader(ArrayDataset(x, y), batch_size=16, shuffle=False)}[form]
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm)]
    layers[0].momentum, layers[1].momentum = 0.8, 0.95
    model.eval()
    model[2].train()                             # a mix of modes, each given back
    modes = [m.training for m in model.modules()]

    update_batch_norm(model, data, batch_size=16)
    swa_utils.update_bn([torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2))) for b in batches_of(x, 16)],
                        reference)

    ours = [np.asarray(b) for _, b in model.named_buffers()]
    theirs = [b.numpy() for name, b in reference.named_buffers() if not name.endswith("num_batches_tracked")]
    assert_states_equal(ours, theirs, 1e-10, "running statistics")
    assert [layer.momentum for layer in layers] == [0.8, 0.95]
    assert [m.training for m in model.modules()] == modes


def test_update_batch_norm_gives_everything_back_when_it_fails():
    rng = np.random.default_rng(6)
    model = lamina_net().eval()
    randomize(model, rng)
    before = [np.asarray(b).copy() for _, b in model.named_buffers()]
    calls = []

    def one_channel_on_the_second_batch(xb):
        calls.append(len(xb))
        return xb[..., :1] if len(calls) == 2 else xb

    x = rng.standard_normal((24, 6, 6, 2)).astype(np.float32)
    failing = DataLoader(ArrayDataset(x), batch_size=8, shuffle=False, transform=one_channel_on_the_second_batch)
    with pytest.raises(ShapeError):
        update_batch_norm(model, failing)
    assert len(calls) == 2                       # the first batch went through and moved the statistics
    with pytest.raises(ValueError, match="update_batch_norm: data gave no batches"):
        update_batch_norm(model, np.zeros((0, 6, 6, 2), dtype=np.float32))
    for a, b in zip((np.asarray(b) for _, b in model.named_buffers()), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model[1].momentum == 0.9 and not any(m.training for m in model.modules())


def test_update_batch_norm_rejects_bad_input():
    model = lamina_net()
    with pytest.raises(ValueError, match="update_batch_norm: batch_size must be a positive integer, got 0"):
        update_batch_norm(model, np.zeros((4, 6, 6, 2)), batch_size=0)
    with pytest.raises(TypeError, match="update_batch_norm: data must be .* got int"):
        update_batch_norm(model, 3)
    with pytest.raises(TypeError, match="update_batch_norm: model must be a lamina Module"):
        update_batch_norm(np.zeros(3), np.zeros((4, 6, 6, 2)))
