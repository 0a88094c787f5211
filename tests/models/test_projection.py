import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.models import projection_head


def test_projection_head_layout_and_shapes():
    head = projection_head(16, hidden=32, layers=3, batch_norm=True, in_features=10)
    dense = [m for m in head.children() if isinstance(m, nn.Dense)]
    assert [d.units for d in dense] == [32, 32, 16]
    assert sum(isinstance(m, nn.BatchNorm) for m in head.children()) == 2
    out = head(lamina.tensor(np.ones((4, 10), dtype=np.float32)))
    assert out.shape == (4, 16)
    assert len(list(projection_head(8, layers=1).children())) == 1


def test_projection_head_rejects_bad_sizes():
    with pytest.raises(ValueError, match="projection_head: hidden"):
        projection_head(8, hidden=0)
