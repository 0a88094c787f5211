"""ONNX export of BitLinear (ternary weights as constants, 8-bit activations quantized in the
graph), the hash-grid encoding and its MLP (the corner indices and the spatial hash in int64,
BitwiseXor at opset 18), the Mamba-2 block (the SSD in its quadratic form, any length), the DiT
and its block (timestep, label and conditioning as further graph inputs) and TFT's gated
residual network: ONNX Runtime gives lamina's evaluation outputs for several batch sizes (and
sequence lengths) and the export leaves the weights as they were. What has no form is refused,
named."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from onnx_checks import check_export, export_session, perturb

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.export import export_onnx
from lamina.export.onnx_generative_layers import HASHED_GRID_OPSET
from lamina.export.onnx_graph import Graph
from lamina.nn.bitlinear import absmean_ternary

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


_perturb = perturb
_export = export_session


def _check(model: nn.Module, tmp_path, input_shape, what: str, rtol: float = 1e-5, opset: int = 17,
           lengths=(), sample=None):
    """:func:`onnx_checks.check_export` returning the exported graph."""
    return onnx.load(str(check_export(model, tmp_path, input_shape, what, rtol, opset, lengths=lengths,
                                      sample=sample)))


def _ops(proto) -> set:
    return {node.op_type for node in proto.graph.node}


# -- BitLinear -------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, use_bias, activation, input_shape", [
    (True, False, None, (6,)), (False, True, "relu", (6,)), (True, True, "gelu", (4, 6))])
def test_bit_linear_exports_with_its_quantizers_in_the_graph(norm, use_bias, activation, input_shape, tmp_path):
    lamina.manual_seed(0)
    layer = nn.BitLinear(5, activation=activation, use_bias=use_bias, norm=norm)
    model = nn.Sequential(layer)
    model.build((None, *input_shape))
    _perturb(model, 0.2)
    proto = _check(model, tmp_path, input_shape, f"BitLinear norm={norm}")
    assert {"ReduceMax", "Abs", "Div", "Round", "Clip", "Mul"} <= _ops(proto)
    assert ("ReduceMean" in _ops(proto)) == norm
    # the stored weight is the ternary one: {-beta, 0, beta}, beta the absolute mean
    w_int, beta = absmean_ternary(layer.weight.numpy())
    stored = next(onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if "ternary" in t.name)
    assert np.allclose(stored, w_int * beta, rtol=1e-6)
    assert set(np.unique(np.round(stored / beta).astype(int))) <= {-1, 0, 1}


def test_the_bit_linear_export_matches_the_packed_integer_form(tmp_path):
    """An independent reference: the packed layer's int8 x int8 product, rescaled once."""
    lamina.manual_seed(1)
    layer = nn.BitLinear(7, use_bias=True)
    layer.build((None, 9))
    _perturb(layer, 0.2)
    _, session = _export(nn.Sequential(layer), tmp_path, (9,))
    x = np.random.default_rng(5).standard_normal((4, 9)).astype(np.float32)
    (got,) = session.run(None, {"input": x})
    assert_close(got, layer.pack()(x), rtol=1e-5, what="BitLinear against the packed form")


# -- the hash-grid encoding ----------------------------------------------------------------------
def _inside(low: float, high: float):
    return lambda shape, rng: rng.uniform(low, high, shape)


@pytest.mark.parametrize("in_dim, levels, log2_size, base, bounds, opset", [
    (2, 2, 8, 3, (0.0, 1.0), 17),       # every level indexed directly
    (2, 3, 4, 2, (-1.0, 2.0), 18),      # direct and hashed levels
    (3, 3, 6, 2, (0.0, 1.0), 18)])      # 3-D, hashed with all three primes
def test_the_hash_grid_encoding_exports(in_dim, levels, log2_size, base, bounds, opset, tmp_path):
    lamina.manual_seed(0)
    layer = nn.HashGridEncoding(in_dim, num_levels=levels, features_per_level=2, log2_hashmap_size=log2_size,
                                base_resolution=base, bounds=bounds)
    layer.table.data = np.random.default_rng(0).standard_normal(layer.table.shape).astype(np.float32)
    hashed = any(h for _, _, h in layer.levels)
    assert hashed == (opset == HASHED_GRID_OPSET)
    proto = _check(layer, tmp_path, (in_dim,), f"HashGridEncoding {in_dim}-D", opset=opset, sample=_inside(*bounds))
    assert {"Floor", "Cast", "Gather"} <= _ops(proto)
    assert ("BitwiseXor" in _ops(proto)) == hashed
    # points on the grid's corners and on the upper border (the last cell, fraction 1)
    _, session = _export(layer, tmp_path, (in_dim,), opset)
    corners = np.array(np.meshgrid(*[bounds] * in_dim)).reshape(in_dim, -1).T.astype(np.float32)
    with lamina.no_grad():
        expected = layer(lamina.tensor(corners)).numpy()
    assert_close(session.run(None, {"input": corners})[0], expected, rtol=1e-5, what="border points")


def test_the_hash_grid_export_reads_points_of_any_leading_shape(tmp_path):
    lamina.manual_seed(0)
    layer = nn.HashGridEncoding(2, num_levels=2, log2_hashmap_size=5, base_resolution=3)
    layer.table.data = np.random.default_rng(1).standard_normal(layer.table.shape).astype(np.float32)
    _check(layer, tmp_path, (4, 2), "HashGridEncoding on (N, 4, 2)", opset=18, sample=_inside(0.0, 1.0))


def test_the_hash_grid_export_clamps_what_the_layer_refuses(tmp_path):
    """The bounds check has no graph form: outside points are clamped to the bounds."""
    layer = nn.HashGridEncoding(2, num_levels=2, log2_hashmap_size=5, base_resolution=3)
    layer.table.data = np.random.default_rng(2).standard_normal(layer.table.shape).astype(np.float32)
    _, session = _export(layer, tmp_path, (2,), 18)
    outside = np.array([[-0.5, 0.25], [1.5, 2.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="must lie in"):
        layer(lamina.tensor(outside))
    with lamina.no_grad():
        expected = layer(lamina.tensor(np.clip(outside, 0, 1))).numpy()
    assert_close(session.run(None, {"input": outside})[0], expected, rtol=1e-5, what="clamped points")


def test_a_hashed_grid_below_opset_18_is_refused(tmp_path):
    layer = nn.HashGridEncoding(2, num_levels=3, log2_hashmap_size=4, base_resolution=2, name="grid")
    with pytest.raises(NotImplementedError, match="grid.*hashed levels.*opset >= 18"):
        export_onnx(layer, tmp_path / "model.onnx", input_shape=(2,), opset=17)


def test_the_hash_grid_mlp_exports(tmp_path):
    lamina.manual_seed(0)
    model = nn.HashGridMLP(2, 3, hidden=4, hidden_layers=2,
                           encoding={"num_levels": 3, "log2_hashmap_size": 4, "base_resolution": 2})
    _perturb(model, 0.5)
    _check(model, tmp_path, (2,), "HashGridMLP", opset=18, sample=_inside(0.0, 1.0))


# -- the Mamba-2 block ---------------------------------------------------------------------------
@pytest.mark.parametrize("d_state, d_conv, headdim, ngroups, chunk_size", [(3, 2, 2, 2, 2), (4, 4, 4, 1, 3)])
def test_the_mamba2_block_exports_for_any_length(d_state, d_conv, headdim, ngroups, chunk_size, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Mamba2Block(4, d_state=d_state, d_conv=d_conv, headdim=headdim, ngroups=ngroups,
                                         chunk_size=chunk_size), nn.Dense(3))
    model.build((None, 5, 4))
    _perturb(model, 0.3)
    proto = _check(model, tmp_path, (5, 4), f"Mamba2Block ngroups={ngroups}", rtol=1e-5, lengths=(1, 9))
    assert {"CumSum", "Pad", "MatMul"} <= _ops(proto) and "Scan" not in _ops(proto)
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim[:2]] == ["batch", "time"]


def test_the_mamba2_block_and_the_hash_grid_export_in_float64(tmp_path):
    """Elementary ops only (no Conv or Softplus, which ONNX Runtime lacks in float64)."""
    lamina.manual_seed(0)
    mamba = _perturb(nn.Sequential(nn.Mamba2Block(4, d_state=3, headdim=2)), 0.3)
    mamba.build((None, 5, 4))
    grid = nn.HashGridEncoding(3, num_levels=3, log2_hashmap_size=6, base_resolution=2)
    grid.table.data = np.random.default_rng(3).standard_normal(grid.table.shape).astype(np.float32)
    for model, shape in ((mamba, (5, 4)), (grid, (3,))):
        model.eval()
        path = export_onnx(model, tmp_path / "model.onnx", input_shape=shape, opset=18, dtype=np.float64)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(8).uniform(0, 1, (2, *shape))
        with lamina.no_grad():
            expected = model(lamina.tensor(x.astype(np.float32))).numpy()
        (got,) = session.run(None, {"input": x})
        assert got.dtype == np.float64
        assert_close(got, expected, rtol=1e-5, what=f"{type(model).__name__} in float64")


# -- the Diffusion Transformer and the gated residual network: further graph inputs ---------------
def _run_with(session, feeds: dict, expected: np.ndarray, what: str) -> None:
    (got,) = session.run(None, feeds)
    assert_close(got, expected, rtol=1e-5, what=what)


@pytest.mark.parametrize("num_classes, learn_sigma", [(None, True), (3, False)])
def test_a_dit_exports_with_timestep_and_label_inputs(num_classes, learn_sigma, tmp_path):
    lamina.manual_seed(0)
    model = models.DiT((4, 6), 2, 2, dim=8, depth=2, num_heads=2, num_classes=num_classes, learn_sigma=learn_sigma,
                       time_dim=8)
    model.build((None, 4, 6, 2))
    _perturb(model, 0.3)            # the zero-initialised modulations and head away from zero
    _, session = _export(model, tmp_path, (4, 6, 2))
    names = [i.name for i in session.get_inputs()]
    assert names == ["input", "timestep"] + (["label"] if num_classes else [])
    rng = np.random.default_rng(4)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 4, 6, 2)).astype(np.float32)
        t = rng.uniform(0, 1000, batch).astype(np.float32)
        feeds, y = {"input": x, "timestep": t}, None
        if num_classes:
            y = rng.integers(0, num_classes + 1, batch)       # num_classes: "no class"
            feeds["label"] = y.astype(np.int64)
        with lamina.no_grad():
            expected = model(lamina.tensor(x), t, y).numpy()
        assert expected.shape == (batch, 4, 6, 2 * (2 if learn_sigma else 1))
        _run_with(session, feeds, expected, f"DiT num_classes={num_classes}, batch {batch}")


def test_a_lone_dit_block_exports_for_any_token_count(tmp_path):
    lamina.manual_seed(0)
    block = models.DiTBlock(8, 2)
    block(lamina.tensor(np.zeros((1, 3, 8), np.float32)), lamina.tensor(np.zeros((1, 5), np.float32)))
    _perturb(block, 0.3)
    _, session = _export(block, tmp_path, (3, 8))
    assert [i.name for i in session.get_inputs()] == ["input", "condition"]
    rng = np.random.default_rng(5)
    for batch, tokens in ((1, 3), (3, 3), (2, 6)):
        x = rng.standard_normal((batch, tokens, 8)).astype(np.float32)
        c = rng.standard_normal((batch, 5)).astype(np.float32)
        with lamina.no_grad():
            expected = block(lamina.tensor(x), lamina.tensor(c)).numpy()
        _run_with(session, {"input": x, "condition": c}, expected, f"DiTBlock on {x.shape}")


@pytest.mark.parametrize("sizes, context_size, input_shape", [((3, 4, 5), 2, (3,)), ((3, 4), None, (6, 3)),
                                                               ((3, 4, 3), 2, (6, 3))])
def test_the_gated_residual_network_exports(sizes, context_size, input_shape, tmp_path):
    lamina.manual_seed(0)
    model = _perturb(models.GatedResidualNetwork(*sizes, context_size=context_size), 0.3)
    _, session = _export(model, tmp_path, input_shape)
    assert [i.name for i in session.get_inputs()] == ["input"] + (["context"] if context_size else [])
    rng = np.random.default_rng(6)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        feeds, c = {"input": x}, None
        if context_size:
            c = rng.standard_normal((batch, context_size)).astype(np.float32)
            feeds["context"] = c
        with lamina.no_grad():
            expected = model(lamina.tensor(x), None if c is None else lamina.tensor(c)).numpy()
        _run_with(session, feeds, expected, f"GatedResidualNetwork {sizes}, batch {batch}")


def test_a_further_graph_input_is_made_once_and_never_takes_a_node_name():
    graph = Graph(onnx, np.float32, 17)
    assert graph.add_input("timestep", np.float32, ["batch"]) == graph.add_input("timestep", np.float32, ["batch"])
    assert [i.name for i in graph.extra_inputs] == ["timestep"]
    graph.node("Identity", ["input"], "context")
    with pytest.raises(ValueError, match="'context' is taken"):
        graph.add_input("context", np.float32, ["batch", 2])


# -- what has no converter ---------------------------------------------------------------------------
def test_a_layer_without_a_converter_still_raises_the_named_error(tmp_path):
    model = models.VariableSelectionNetwork(3, 4, 5, name="selection")
    with pytest.raises(NotImplementedError, match="selection.*no ONNX converter"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(3, 4))


def test_the_readme_example_runs(tmp_path, capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exporting BitLinear, hash grids and Mamba-2 to ONNX", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0].replace("/tmp/", f"{tmp_path}/")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["True", "True", "True"]
