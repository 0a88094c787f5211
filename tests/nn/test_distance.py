import json
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.nn.distance import CosineSimilarity, PairwiseDistance

CASES = {
    "cosine last axis": (CosineSimilarity(), torch.nn.CosineSimilarity(dim=-1), (5, 4), (5, 4)),
    "cosine axis 1, broadcast": (CosineSimilarity(axis=1, eps=1e-6), torch.nn.CosineSimilarity(dim=1, eps=1e-6),
                                 (2, 3, 4), (1, 3, 4)),
    "distance p=2": (PairwiseDistance(), torch.nn.PairwiseDistance(), (6, 3), (6, 3)),
    "distance p=1, keepdim": (PairwiseDistance(p=1, keepdim=True), torch.nn.PairwiseDistance(p=1, keepdim=True),
                              (2, 4, 3), (4, 3)),
    "distance p=inf": (PairwiseDistance(p=math.inf, eps=1e-3), torch.nn.PairwiseDistance(p=math.inf, eps=1e-3),
                       (7, 5), (7, 5)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, shape_a, shape_b = CASES[name]
    a, b = randn(*shape_a, seed=1), randn(*shape_b, seed=2)
    out = compare_with_torch(lambda x, y: ours(x, y), lambda x, y: theirs(x, y), a, b, dtype=dtype)
    assert out[0].shape == ours.compute_output_shape([shape_a, shape_b])


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, shape_a, shape_b = CASES[name]
    assert check_gradients(lambda x, y: ours(x, y), randn(*shape_a, seed=3), randn(*shape_b, seed=4))


def test_values_by_hand_and_list_input():
    a = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    b = np.array([[6.0, 8.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(CosineSimilarity()([a, b]).numpy(), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(PairwiseDistance(eps=0)(a, b).numpy(), [5.0, math.sqrt(5)], rtol=1e-6)
    np.testing.assert_allclose(PairwiseDistance(p=1, eps=0, keepdim=True)(a, b).numpy(), [[7.0], [3.0]])


def test_output_shapes():
    assert CosineSimilarity(axis=1).compute_output_shape([(None, 3, 4), (None, 3, 1)]) == (None, 4)
    assert PairwiseDistance(keepdim=True).compute_output_shape([(None, 8), (1, 8)]) == (None, 1)
    assert PairwiseDistance().compute_output_shape([(5, 8), (8,)]) == (5,)
    assert CosineSimilarity(axis=0).compute_output_shape([(None, 3), (1, 3)]) == (3,)
    assert PairwiseDistance().compute_output_shape([(None, 8), (4, 8)]) == (4,)


def test_configs_round_trip_through_json():
    for layer in (CosineSimilarity(axis=1, eps=1e-4, name="cos"), PairwiseDistance(p=math.inf, keepdim=True),
                  PairwiseDistance(p=1, eps=0.0)):
        again = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    assert repr(CosineSimilarity()) == "CosineSimilarity(axis=-1, eps=1e-08)"
    assert repr(PairwiseDistance(p=1, keepdim=True)) == "PairwiseDistance(p=1, eps=1e-06, keepdim=True)"


def test_errors_name_the_layer_and_the_shapes():
    a = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"CosineSimilarity 'cos': expected two inputs.*got 3"):
        CosineSimilarity(name="cos")(a, a, a)
    with pytest.raises(lamina.ShapeError, match=r"cosine_similarity.*\(2, 3\) and \(2, 4\)"):
        CosineSimilarity()(a, np.ones((2, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"PairwiseDistance.*\(None, 3\) and \(4, 5\) cannot be broadcast"):
        PairwiseDistance().compute_output_shape([(None, 3), (4, 5)])
    with pytest.raises(lamina.ShapeError, match=r"CosineSimilarity.*axis 2 is out of range.*\(None, 3\)"):
        CosineSimilarity(axis=2).compute_output_shape([(None, 3), (None, 3)])
    with pytest.raises(ValueError, match="PairwiseDistance: p must be one of 1, 2, inf"):
        PairwiseDistance(p=3)
    with pytest.raises(ValueError, match="CosineSimilarity: eps must be a number >= 0"):
        CosineSimilarity(eps=-1)
