"""An explicit ``build(input_shape)`` on a model made of other modules builds them all (as
Keras's ``Model.build``), without moving any running statistic; the lazy build of a first
call still runs the forward pass once."""

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.errors import ShapeError
from lamina.models import P4CNN


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(5)
        self.norm = nn.BatchNorm()
        self.out = nn.Dense(2)
        self.forward_calls = 0

    def forward(self, x):
        self.forward_calls += 1
        return self.out(self.norm(self.hidden(x)).relu())


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Dense(3)
        self.right = nn.Dense(3)

    def forward(self, a, b):
        return self.left(a) + self.right(b)


class EmbedThenDense(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Dense(2)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(axis=1))


def shapes(model):
    return {name: p.shape for name, p in model.named_parameters()}


def test_explicit_build_creates_every_weight_as_a_call_would():
    built, called = TwoLayers(), TwoLayers()
    built.build((None, 4))
    called(np.zeros((3, 4), np.float32))
    assert built.built and built.hidden.built and built.out.built
    assert shapes(built) == shapes(called) == {"hidden.weight": (4, 5), "hidden.bias": (5,), "norm.weight": (5,),
                                               "norm.bias": (5,), "out.weight": (5, 2), "out.bias": (2,)}


def test_explicit_build_leaves_statistics_and_modes_alone():
    model = TwoLayers()
    model.out.eval()                       # a model may mix modes: each comes back as it was
    model.build((None, 4))
    assert model.training and model.hidden.training and not model.out.training
    np.testing.assert_array_equal(model.norm.running_mean, np.zeros(5))
    np.testing.assert_array_equal(model.norm.running_var, np.ones(5))
    assert lamina.autograd.is_grad_enabled()


def test_lazy_build_runs_the_forward_pass_once():
    model = TwoLayers()
    model(np.ones((2, 4), np.float32))
    assert model.forward_calls == 1
    model.build((None, 4))                 # already built: nothing runs
    assert model.forward_calls == 1


def test_several_inputs_build_on_the_first_call_and_ids_are_integers():
    two = TwoInputs()
    two.build([(None, 2), (None, 6)])      # a shape cannot tell ids, values or edge lists apart
    assert two.built and not two.left.built
    two(np.ones((1, 2), np.float32), np.ones((1, 6), np.float32))
    assert shapes(two) == {"left.weight": (2, 3), "left.bias": (3,), "right.weight": (6, 3), "right.bias": (3,)}
    ids = EmbedThenDense()
    ids.build((None, 5))                   # integer zeros reach the embedding
    assert shapes(ids) == {"embed.weight": (7, 4), "head.weight": (4, 2), "head.bias": (2,)}


def test_a_built_zoo_model_trains_from_its_parameters():
    """The Keras order: build, hand the parameters to an optimizer, then train."""
    lazy = P4CNN(channels=(4, 4), group="p4")
    lazy(np.zeros((1, 8, 8, 1), np.float32))
    model = P4CNN(channels=(4, 4), group="p4")
    model.build((None, 8, 8, 1))
    params = list(model.parameters())
    assert sum(p.size for p in params) == sum(p.size for p in lazy.parameters()) > 0
    optimizer = lamina.optim.Adam(params, lr=1e-2)
    x = np.random.default_rng(0).standard_normal((6, 8, 8, 1)).astype(np.float32)
    y = np.arange(6) % 10
    before = lamina.functional.cross_entropy(model(x), y).item()
    for _ in range(5):
        optimizer.zero_grad()
        loss = lamina.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    assert lamina.functional.cross_entropy(model(x), y).item() < before


def test_a_bad_shape_names_the_model():
    with pytest.raises(ShapeError, match=r"build: expected an input shape .* got 'wide'"):
        TwoLayers().build("wide")


def test_an_unknown_axis_beyond_the_batch_leaves_the_children_to_their_first_call():
    model = TwoLayers()
    model.build((None, None))
    assert model.built and not model.hidden.built and model.forward_calls == 0
    assert model(np.ones((2, 4), np.float32)).shape == (2, 2)
    assert shapes(model)["hidden.weight"] == (4, 5)


@pytest.mark.parametrize("make, shape", [(lambda: nn.MultiHeadAttention(4, 2, add_bias_kv=True), (None, 3, 4)),
                                         (lambda: nn.Dense(3), (None, 5)),
                                         (lambda: nn.Sequential([nn.Dense(3), nn.Dense(2)]), (None, 4))],
                         ids=["attention", "dense", "sequential"])
def test_a_model_built_explicitly_saves_and_loads(tmp_path, make, shape):
    model = make()
    model.build(shape)
    assert model.build_input_shape == shape
    x = lamina.tensor(np.random.default_rng(0).standard_normal((2,) + shape[1:]).astype(np.float32))
    model.eval()
    expected = model(x)
    lamina.save(model, tmp_path / "model.lam")
    loaded = lamina.load(tmp_path / "model.lam")
    got = loaded(x)
    np.testing.assert_array_equal(got[0].numpy() if isinstance(got, tuple) else got.numpy(),
                                  expected[0].numpy() if isinstance(expected, tuple) else expected.numpy())


def test_an_explicit_build_keeps_the_shape_it_was_given_and_a_lazy_build_the_one_it_saw():
    container = TwoLayers()
    container.build((None, 4))
    assert container.build_input_shape == (None, 4)      # not the sample of one it ran on
    model = nn.Sequential([nn.Dense(3), nn.Dense(2)])
    model.build([None, 4])
    assert model.build_input_shape == (None, 4)          # Sequential keeps its own tuple
    dense = nn.Dense(3)
    dense(np.ones((2, 5), np.float32))
    assert dense.build_input_shape == (2, 5)
