"""ModuleList, ModuleDict, ParameterList and ParameterDict, checked against torch.nn's."""

import copy
import functools

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.nn.containers import ModuleDict, ModuleList, ParameterDict, ParameterList
from lamina.train import Trainer

# -- list and dict semantics, operation for operation against torch ----------------------


def _twins(n: int):
    """n lamina layers and n torch layers; entry i of one side stands for entry i of the other."""
    return [nn.Dense(i + 1) for i in range(n)], [torch.nn.Linear(1, i + 1) for i in range(n)]


def _layout(container, pool) -> list[tuple[str, int]]:
    """(key, which pool entry) for every entry, by identity."""
    return [(key, next(i for i, m in enumerate(pool) if m is module)) for key, module in container._modules.items()]


def test_module_list_mutations_match_torch():
    ours_pool, theirs_pool = _twins(9)
    ours, theirs = ModuleList(ours_pool[:3]), torch.nn.ModuleList(theirs_pool[:3])
    steps = [
        lambda c, p: c.append(p[3]),
        lambda c, p: c.extend(p[4:6]),
        lambda c, p: c.insert(1, p[6]),
        lambda c, p: c.insert(0, p[7]),
        lambda c, p: c.__setitem__(-1, p[8]),
        lambda c, p: c.__delitem__(2),
        lambda c, p: c.__delitem__(-1),
        lambda c, p: c.__delitem__(slice(0, 4, 2)),
        lambda c, p: c.pop(1),
        lambda c, p: c.__iadd__([p[0], p[1]]),
    ]
    for k, step in enumerate(steps):
        step(ours, ours_pool)
        step(theirs, theirs_pool)
        assert _layout(ours, ours_pool) == _layout(theirs, theirs_pool), f"after step {k}"
        assert list(ours._modules) == [str(i) for i in range(len(ours))]
    assert len(ours) == len(theirs) == 5
    for index in (0, 2, -1, -5):
        assert ours_pool.index(ours[index]) == theirs_pool.index(theirs[index])
    for index in (slice(1, None), slice(None, None, -1), slice(-3, -1)):
        sliced_ours, sliced_theirs = ours[index], theirs[index]
        assert type(sliced_ours) is ModuleList
        assert _layout(sliced_ours, ours_pool) == _layout(sliced_theirs, theirs_pool)
    combined_ours, combined_theirs = ours + ModuleList([ours_pool[2]]), theirs + torch.nn.ModuleList([theirs_pool[2]])
    assert _layout(combined_ours, ours_pool) == _layout(combined_theirs, theirs_pool)
    assert len(ours) == 5  # + made a new list
    assert (ours_pool[4] in ours) == (theirs_pool[4] in theirs) and (ours_pool[3] in ours) == (theirs_pool[3] in theirs)
    assert [ours_pool.index(m) for m in ours] == [theirs_pool.index(m) for m in theirs]


@pytest.mark.parametrize("index", [-1, -3, -10, 2, 10])
def test_module_list_insert_follows_list_insert(index):
    # torch's insert mis-handles negative and past-the-end indices; lamina follows list.insert
    pool = [nn.ReLU() for _ in range(4)]
    container, reference = ModuleList(pool[:3]), list(pool[:3])
    container.insert(index, pool[3])
    reference.insert(index, pool[3])
    assert list(container) == reference and list(container._modules) == ["0", "1", "2", "3"]


def test_parameter_list_mutations_follow_the_same_rules():
    arrays = [np.full((2,), i, dtype=np.float32) for i in range(5)]
    params = ParameterList(arrays[:3])
    params.insert(1, arrays[3])
    params.append(arrays[4])
    del params[0]
    assert [float(p.data[0]) for p in params] == [3, 1, 2, 4]
    assert list(params._parameters) == ["0", "1", "2", "3"]
    assert type(params[1:3]) is ParameterList and params[1:3][0] is params[1]
    assert params[-1] is params[3] and params.pop() is not None and len(params) == 3


def test_module_dict_operations_match_torch():
    ours_pool, theirs_pool = _twins(6)
    ours = ModuleDict({"b": ours_pool[0], "a": ours_pool[1]})
    theirs = torch.nn.ModuleDict({"b": theirs_pool[0], "a": theirs_pool[1]})
    steps = [
        lambda c, p: c.__setitem__("z", p[2]),
        lambda c, p: c.__setitem__("b", p[3]),            # replacing keeps the position
        lambda c, p: c.update([("y", p[4]), ("a", p[5])]),
        lambda c, p: c.pop("z"),
        lambda c, p: c.__delitem__("y"),
        lambda c, p: c.update({"m": p[0], "c": p[2]}),
    ]
    for k, step in enumerate(steps):
        step(ours, ours_pool)
        step(theirs, theirs_pool)
        assert _layout(ours, ours_pool) == _layout(theirs, theirs_pool), f"after step {k}"
    assert list(ours) == list(theirs) == list(ours.keys()) == ["b", "a", "m", "c"]
    assert [ours_pool.index(m) for m in ours.values()] == [theirs_pool.index(m) for m in theirs.values()]
    assert [k for k, _ in ours.items()] == [k for k, _ in theirs.items()]
    assert ("m" in ours) == ("m" in theirs) and ("z" in ours) == ("z" in theirs)
    assert ours.get("zz") is None and ours.get("a") is ours["a"]
    ours.clear()
    theirs.clear()
    assert len(ours) == len(theirs) == 0


def test_parameter_dict_keeps_order_and_wraps_values():
    params = ParameterDict([("scale", np.ones(3, dtype=np.float32)), ("shift", lamina.tensor(np.zeros(3)))])
    params["gain"] = nn.Parameter(np.full((1,), 2.0, dtype=np.float32))
    params["scale"] = np.full((3,), 5.0, dtype=np.float32)
    assert list(params) == ["scale", "shift", "gain"]
    assert all(isinstance(p, nn.Parameter) and p.trainable for p in params.values())
    assert params["scale"].data[0] == 5.0 and params.pop("shift").shape == (3,) and list(params) == ["scale", "gain"]


def test_arrays_and_tensors_are_wrapped_into_parameters_sharing_data():
    array64 = np.arange(3.0)
    plain = lamina.tensor(np.ones((2, 2), dtype=np.float32))
    given = nn.Parameter(np.zeros(4, dtype=np.float32), trainable=False)
    params = ParameterList([array64, plain, given])
    assert all(isinstance(p, nn.Parameter) for p in params)
    assert params[0].dtype == np.float64 and params[0].requires_grad and params[1].trainable
    assert params[2] is given and not params[2].trainable
    array64[0] = 7.0
    plain.data[0, 0] = 9.0
    assert params[0].data[0] == 7.0 and params[1].data[0, 0] == 9.0   # as torch.nn.Parameter(t) shares t


# -- errors -------------------------------------------------------------------------


def _raises_like_torch(ours_op, theirs_op, match: str):
    """ours_op raises the exception type theirs_op raises, with a message matching ``match``."""
    with pytest.raises(Exception) as torch_error:
        theirs_op()
    with pytest.raises(torch_error.type, match=match):
        ours_op()


def test_errors_match_torch_types_and_name_the_container():
    ours, theirs = ModuleList([nn.ReLU(), nn.ReLU()]), torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()])
    _raises_like_torch(lambda: ours.append(3), lambda: theirs.append(3), "ModuleList: expected a Module, got int")
    _raises_like_torch(lambda: ours[5], lambda: theirs[5], r"ModuleList index 5 is out of range for 2 entries")
    _raises_like_torch(lambda: ours[-3], lambda: theirs[-3], r"ModuleList index -3 is out of range")
    _raises_like_torch(lambda: ours.__setitem__(2, nn.ReLU()), lambda: theirs.__setitem__(2, torch.nn.ReLU()),
                       "ModuleList index 2")
    _raises_like_torch(lambda: ours["0"], lambda: theirs["0"], "ModuleList indices must be integers or slices")
    _raises_like_torch(lambda: ours.extend(nn.ReLU()), lambda: theirs.extend(torch.nn.ReLU()),
                       "ModuleList.extend expects an iterable")
    assert len(ours) == 2

    ours_dict, theirs_dict = ModuleDict(), torch.nn.ModuleDict()
    for key, match in [(1, "ModuleDict: keys must be strings, got 1"),
                       ("training", "ModuleDict: the key 'training' clashes with an attribute"),
                       ("keys", "attribute 'keys' already exists"),
                       ("a.b", "cannot contain '.'"), ("", "empty string")]:
        _raises_like_torch(lambda key=key: ours_dict.__setitem__(key, nn.ReLU()),
                           lambda key=key: theirs_dict.__setitem__(key, torch.nn.ReLU()), match)
    _raises_like_torch(lambda: ours_dict.update(5), lambda: theirs_dict.update(5), "ModuleDict.update expects")
    _raises_like_torch(lambda: ours_dict.update([("a", nn.ReLU(), 1)]),
                       lambda: theirs_dict.update([("a", torch.nn.ReLU(), 1)]), "element #0 has length 3")
    _raises_like_torch(lambda: ours_dict.update({"a": nn.ReLU(), "b": "x"}),
                       lambda: theirs_dict.update({"a": torch.nn.ReLU(), "b": "x"}), "expected a Module, got str")
    assert len(ours_dict) == 0          # a failed update sets nothing
    _raises_like_torch(lambda: ours_dict["missing"], lambda: theirs_dict["missing"],
                       r"ModuleDict: no entry 'missing'; keys: \[\]")

    with pytest.raises(TypeError, match="ParameterList: expected a Parameter, a Tensor or an array, got str"):
        ParameterList(["w"])
    with pytest.raises(TypeError, match=r"ParameterList: a parameter holds floating-point numbers.*int64"):
        ParameterList([np.arange(3, dtype=np.int64)])
    with pytest.raises(TypeError, match="ParameterList.extend expects an iterable"):
        ParameterList().extend(np.ones(3, dtype=np.float32))
    with pytest.raises(KeyError, match="ParameterDict: the key 'eval' clashes"):
        ParameterDict({"eval": np.ones(1, dtype=np.float32)})


@pytest.mark.parametrize("container", [ModuleList([nn.Dense(2)]), ModuleDict({"a": nn.Dense(2)}),
                                       ParameterList([np.ones(2, dtype=np.float32)])])
def test_calling_a_container_says_to_iterate_it(container):
    with pytest.raises(NotImplementedError, match=f"{type(container).__name__} is a container and has no forward"):
        container(np.ones((1, 2), dtype=np.float32))


# -- through the owning module ------------------------------------------------------


class LaminaNet(nn.Module):
    """Dense blocks in a ModuleList, each scaled by an entry of a ParameterList, then two heads."""

    def __init__(self, widths=(6, 5), classes=3, dropout=0.0):
        super().__init__()
        self.blocks = ModuleList(nn.Dense(n, activation="relu") for n in widths)
        self.scales = ParameterList(np.linspace(0.5, 1.5, n).astype(np.float32) for n in widths)
        self.heads = ModuleDict({"cls": nn.Dense(classes), "box": nn.Dense(4)})
        self.extras = ParameterDict({"offset": np.zeros(classes, dtype=np.float32)})
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        for block, scale in zip(self.blocks, self.scales):
            x = block(x) * scale
        x = self.drop(x)
        return self.heads["cls"](x) + self.extras["offset"], self.heads["box"](x)


class TorchNet(torch.nn.Module):
    def __init__(self, n_in=4, widths=(6, 5), classes=3):
        super().__init__()
        sizes = (n_in, *widths)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.scales = torch.nn.ParameterList(torch.ones(n) for n in widths)
        self.heads = torch.nn.ModuleDict({"cls": torch.nn.Linear(widths[-1], classes),
                                          "box": torch.nn.Linear(widths[-1], 4)})
        self.extras = torch.nn.ParameterDict({"offset": torch.zeros(classes)})

    def forward(self, x):
        for block, scale in zip(self.blocks, self.scales):
            x = torch.relu(block(x)) * scale
        return self.heads["cls"](x) + self.extras["offset"], self.heads["box"](x)


CONTAINERS = {"ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}


def _built_pair():
    ours, theirs = LaminaNet(), TorchNet()
    ours(np.zeros((1, 4), dtype=np.float32))
    rng = np.random.default_rng(1)
    for key, value in ours.state_dict().items():           # random weights, copied into torch
        value[...] = rng.standard_normal(value.shape).astype(np.float32)
        target = theirs.get_parameter(key)
        is_dense_kernel = key.endswith(".weight")
        with torch.no_grad():
            target.copy_(torch.from_numpy(value.T.copy() if is_dense_kernel else value.copy()))
    return ours, theirs


def test_state_dict_keys_equal_torch_and_round_trip():
    ours, theirs = _built_pair()
    assert list(ours.state_dict()) == list(theirs.state_dict())      # blocks.0.weight, scales.1, heads.cls.bias...
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    containers_ours = [name for name, m in ours.named_modules() if type(m).__name__ in CONTAINERS]
    containers_theirs = [name for name, m in theirs.named_modules() if type(m).__name__ in CONTAINERS]
    assert containers_ours == containers_theirs == ["blocks", "scales", "heads", "extras"]

    other = LaminaNet()
    other(np.zeros((1, 4), dtype=np.float32))
    other.load_state_dict({k: np.array(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    for a, b in zip(ours(x), other(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    duplicate = copy.deepcopy(ours)
    assert list(duplicate.state_dict()) == list(ours.state_dict())
    duplicate.blocks[0].weight.data[...] = 0
    assert np.abs(ours.blocks[0].weight.data).sum() > 0


def test_outputs_and_gradients_equal_torch():
    ours, theirs = _built_pair()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    upstream = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)]
    x_ours, x_theirs = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    for k, (a, b) in enumerate(zip(out_ours, out_theirs)):
        assert_close(a.numpy(), b.detach().numpy(), 1e-5, f"output {k}")
    cost_ours = (out_ours[0] * lamina.tensor(upstream[0])).sum() + (out_ours[1] * lamina.tensor(upstream[1])).sum()
    cost_theirs = (out_theirs[0] * torch.tensor(upstream[0])).sum() + (out_theirs[1] * torch.tensor(upstream[1])).sum()
    cost_ours.backward()
    cost_theirs.backward()
    assert_close(x_ours.grad, x_theirs.grad.numpy(), 1e-5, "input gradient")
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        expected = torch_params[name].grad.numpy()
        assert_close(param.grad, expected.T if name.endswith(".weight") else expected, 1e-5, f"gradient of {name}")


def test_modes_freeze_zero_grad_and_hooks_reach_the_entries():
    model = LaminaNet(dropout=0.5)
    x = np.ones((2, 4), dtype=np.float32)
    model(x)
    model.eval()
    assert not any(m.training for m in model.modules()) and not model.blocks[1].training
    model.train()
    assert all(m.training for m in model.modules())

    model.blocks.freeze()
    model.scales.freeze()
    trainable = [name for name, _ in model.named_parameters(trainable_only=True)]
    assert trainable == ["heads.cls.weight", "heads.cls.bias", "heads.box.weight", "heads.box.bias", "extras.offset"]
    model.eval()
    sum(out.sum() for out in model(x)).backward()
    assert model.blocks[0].weight.grad is None and model.scales[0].grad is None
    assert model.heads["cls"].weight.grad is not None and model.extras["offset"].grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())

    seen = []
    handles = [model.blocks[1].register_forward_hook(lambda m, inputs, out: seen.append(("block", out.shape))),
               model.heads["box"].register_forward_pre_hook(lambda m, inputs: seen.append(("box", inputs[0].shape)))]
    model(np.ones((3, 4), dtype=np.float32))
    for handle in handles:
        handle.remove()
    assert seen == [("block", (3, 5)), ("box", (3, 5))]


def test_repr_lists_entries_under_their_keys():
    model = LaminaNet()
    model(np.zeros((1, 4), dtype=np.float32))
    lines = repr(model).splitlines()
    assert lines[:4] == ["LaminaNet(", "  (blocks): ModuleList(", "    (0): Dense(4 -> 6, activation='relu')",
                         "    (1): Dense(6 -> 5, activation='relu')"]
    assert "  (scales): ParameterList(" in lines
    assert "    (1): Parameter(shape=(5,), dtype=float32, trainable=True)" in lines
    assert "    (cls): Dense(5 -> 3)" in lines
    assert "    (offset): Parameter(shape=(3,), dtype=float32, trainable=True)" in lines
    assert repr(ModuleList()) == "ModuleList()" and repr(ParameterDict()) == "ParameterDict()"


# -- learning -----------------------------------------------------------------------


class DigitsMLP(nn.Module):
    """PyTorch style: the hidden layers in a ModuleList, looped over in forward; shapes lazy."""

    def __init__(self, hidden=(64, 64)):
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = ModuleList(nn.Dense(n, activation="relu") for n in hidden)
        self.out = nn.Dense(10)

    def forward(self, x):
        x = self.flatten(x)
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


def _digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    return xtr, ytr, xte, yte


def _accuracy(model, x, y) -> float:
    model.eval()
    with lamina.no_grad():
        return float((model(lamina.tensor(x)).numpy().argmax(axis=1) == y).mean())


def test_module_list_model_learns_digits_with_trainer():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = _digits()
    model = DigitsMLP()
    opt = optim.Adam(model, lr=3e-3)                 # the weights appear on the first call
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True)
    Trainer(model, loss, opt, verbose=0).fit((xtr, ytr), epochs=10, batch_size=32, seed=0)
    assert len(opt.params) == 6
    assert _accuracy(model, xte, yte) > 0.9


def test_module_list_model_learns_digits_with_a_manual_loop():
    lamina.manual_seed(1)
    xtr, ytr, xte, yte = _digits()
    model = DigitsMLP()
    model(lamina.tensor(xtr[:1]))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        model.train()
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            cost = F.categorical_cross_entropy(model(lamina.tensor(xtr[batch])), ytr[batch],
                                                               from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    assert _accuracy(model, xte, yte) > 0.9
