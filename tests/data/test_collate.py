import numpy as np
import pytest
import torch
from torch.utils.data import default_collate as torch_collate

from lamina.data import default_collate


def test_a_tuple_of_a_number_and_an_array_is_collated_component_by_component():
    samples = [(np.zeros(2), (1, np.zeros(3))), (np.ones(2), (2, np.ones(3)))]
    xb, (ids, rows) = default_collate(samples)
    expected = torch_collate([(torch.tensor(x), (i, torch.tensor(r))) for x, (i, r) in samples])
    np.testing.assert_array_equal(xb, expected[0].numpy())
    np.testing.assert_array_equal(ids, expected[1][0].numpy())
    np.testing.assert_array_equal(rows, expected[1][1].numpy())


@pytest.mark.parametrize("sample", [([1, 2], [[1, 2], [3, 4]]), (3, [1.5, 2.5])])
def test_lists_of_numbers_still_stack_into_arrays(sample):
    xb, yb = default_collate([sample, sample])
    assert xb.shape == (2, *np.shape(sample[0])) and yb.shape == (2, *np.shape(sample[1]))
