"""ONNX export of the RG-LRU, Griffin's recurrent block, its local multi-query attention and the
Hawk and Griffin language models: ONNX Runtime gives lamina's evaluation outputs (a whole
sequence from a zero state) for several batch sizes and lengths from one export, with every
parameter moved off its initial value, and the export leaves the weights as they were."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from onnx_checks import check_export, perturb, weights

import lamina
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from token_model_checks import check_token_model_in_onnx_runtime  # noqa: E402  (needs onnx and onnxruntime)

_check = functools.partial(check_export, build=True, perturb_seed=7, lengths=(2, 11))


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_rglru_exports_as_a_scan(num_blocks, tmp_path):
    model = nn.Sequential(nn.RGLRU(6, num_blocks=num_blocks))
    _check(model, tmp_path, (7, 6), f"RGLRU, {num_blocks} gate blocks", rtol=1e-4)


@pytest.mark.parametrize("options", [dict(lru_width=8, num_blocks=2, conv_width=3), dict(conv_width=1),
                                     dict(conv_width=4)])
def test_griffin_recurrent_block_exports(options, tmp_path):
    model = nn.Sequential(nn.GriffinRecurrentBlock(6, **options))
    _check(model, tmp_path, (7, 6), f"GriffinRecurrentBlock {options}", rtol=1e-4)


@pytest.mark.parametrize("width, heads, window", [(8, 2, 3), (16, 2, 4), (8, 4, 20)])
def test_local_multi_query_attention_exports(width, heads, window, tmp_path):
    """Head sizes 4, 8 and 2 (rotary on 2, 4 and no features); windows shorter and longer than
    the sequences."""
    model = nn.Sequential(models.LocalMQAttention(width, heads, window))
    _check(model, tmp_path, (7, width), f"LocalMQAttention({width}, {heads}, {window})", rtol=1e-4)


def _token_model(model, steps: int = 6):
    lamina.manual_seed(0)
    model(lamina.tensor(np.zeros((1, steps), dtype=np.int64)))
    model.eval()
    return perturb(model, scale=0.2, seed=11)


@pytest.mark.parametrize("make", [lambda: models.hawk(vocab_size=23, width=8, depth=2, num_heads=2, lru_width=12),
                                  lambda: models.griffin(vocab_size=23, width=8, depth=3, num_heads=2, window=3)])
def test_hawk_and_griffin_export_whole(make, tmp_path):
    model = _token_model(make())
    before = weights(model)
    check_token_model_in_onnx_runtime(model, tmp_path / "lm.onnx", type(model).__name__, 23, 8,
                                      [(1, 6), (3, 6), (2, 1), (2, 9)])
    after = weights(model)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_an_uncapped_griffin_exports(tmp_path):
    model = _token_model(models.griffin(vocab_size=17, width=8, depth=3, num_heads=1, window=2, logits_soft_cap=0.0))
    check_token_model_in_onnx_runtime(model, tmp_path / "lm.onnx", "uncapped Griffin", 17, 8, [(2, 5), (1, 8)])


def test_a_step_without_a_time_axis_is_refused(tmp_path):
    layer = nn.RGLRU(4, name="lru")
    with pytest.raises(NotImplementedError, match="lru.*RGLRU.*time"):
        export_onnx(layer, tmp_path / "model.onnx", input_shape=(4,))
