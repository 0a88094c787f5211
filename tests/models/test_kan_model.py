"""models.KAN: learning pykan's example, grid updates, grid extension, pruning, plots and the
symbolic read-out."""

import time

import numpy as np
import pytest

import lamina
from helpers import assert_close, run_readme_section
from lamina import models, nn, optim
from lamina.errors import ShapeError


def pykan_example(n, seed):
    """f(x, y) = exp(sin(pi x) + y^2) on [-1, 1]^2."""
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    return x, np.exp(np.sin(np.pi * x[:, :1]) + x[:, 1:] ** 2)


def rmse(model, x, y) -> float:
    return float(np.sqrt(((model(x).numpy() - y) ** 2).mean()))


def fit_lbfgs(model, x, y, steps, update_grid_at=()):
    xt, yt = lamina.tensor(x, dtype=np.float64), lamina.tensor(y, dtype=np.float64)

    def new_optimizer():
        return optim.LBFGS(model.parameters(), lr=1, history_size=10, line_search_fn="strong_wolfe", max_iter=20)

    opt = new_optimizer()

    def closure():
        opt.zero_grad()
        loss = ((model(xt) - yt) ** 2).mean()
        loss.backward()
        return loss

    for step in range(steps):
        if step in update_grid_at:
            model.update_grid(x)
            opt = new_optimizer()                     # the old curvature pairs belong to the old grid
        opt.step(closure)
    return model



@pytest.fixture(scope="module")
def trained():
    """A [2, 5, 1] KAN fitted to pykan's example (shared by the tests that read it)."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(0)
    x, y = pykan_example(500, 0)
    start = time.perf_counter()
    model = fit_lbfgs(models.KAN([2, 5, 1]), x, y, steps=15, update_grid_at=(0, 3, 6))
    seconds = time.perf_counter() - start
    lamina.set_default_dtype(np.float32)
    return model, x, y, seconds


def test_kan_learns_pykans_example_and_beats_an_mlp(trained, float64):
    model, x, y, seconds = trained
    x_test, y_test = pykan_example(500, 1)
    kan_rmse = rmse(model, x_test, y_test)
    lamina.manual_seed(0)
    mlp = nn.Sequential([nn.Dense(37, activation="tanh"), nn.Dense(1)])
    mlp(x[:1])
    assert abs(mlp.num_parameters() - model.num_parameters()) <= 2          # 149 vs 150
    mlp_rmse = rmse(fit_lbfgs(mlp, x, y, steps=15), x_test, y_test)
    print(f"[2, 5, 1] KAN: test RMSE {kan_rmse:.4f} in {seconds:.2f} s (15 LBFGS steps); "
          f"MLP [2, 37, 1] of {mlp.num_parameters()} parameters: {mlp_rmse:.4f}")
    assert kan_rmse < 0.1                       # ~0.034 measured; the target spans [0.37, 7.4]


def test_refine_keeps_the_function_on_a_finer_grid(trained, float64):
    model, x, y, _ = trained
    finer = model.refine(10, x)
    assert [layer.grid_size for layer in finer.layers] == [10, 10]
    assert [layer.spline_weight.shape[-1] for layer in finer.layers] == [13, 13]
    assert model.layers[0].grid_size == 5                          # the coarse model is untouched
    gap = np.abs(finer(x).numpy() - model(x).numpy()).max()
    print(f"refine 5 -> 10: max output change on the data {gap:.2e}")
    assert gap < 0.05 * np.ptp(y)
    before = rmse(finer, x, y)
    fit_lbfgs(finer, x, y, steps=3)
    assert rmse(finer, x, y) < before


def test_update_grid_of_the_model_keeps_outputs(float64):
    model = models.KAN([2, 3, 1], grid_size=6)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 2))
    before = model(x).numpy()
    model.update_grid(x)
    change = np.abs(model(x).numpy() - before).max() / np.ptp(before)
    print(f"KAN.update_grid: max output change / output range {change:.2e}")
    assert change < 0.02
    hidden = model.layer_inputs(x)[1]
    assert np.allclose(model.layers[1].grid[:, 3], hidden.min(axis=0) - 0.02 * 0.01)


def test_prune_drops_nodes_without_outgoing_activation(float64):
    model = models.KAN([2, 4, 1])
    x = np.random.default_rng(0).uniform(-1, 1, (100, 2))
    last = model.layers[1]
    last.base_weight.data[:, 2] = 0.0                             # node 2 no longer feeds the output
    last.spline_scaler.data[:, 2] = 0.0
    incoming, outgoing = model.node_scores(x)[0]
    assert outgoing[2] == 0 and incoming[2] > 1e-2
    pruned = model.prune(x, threshold=1e-2)
    assert pruned.widths == [2, 3, 1] and model.widths == [2, 4, 1]
    assert pruned.layers[0].base_weight.shape == (3, 2) and pruned.layers[1].grid.shape == (3, 12)
    assert_close(pruned(x).numpy(), model(x).numpy(), 1e-12, "pruned outputs")
    scales = model.edge_scales(x)
    assert [s.shape for s in scales] == [(4, 2), (1, 4)]


def test_auto_symbolic_finds_sin_and_fixes_the_edge(float64):
    lamina.manual_seed(0)
    x = np.random.default_rng(0).uniform(-1, 1, (200, 1))
    y = np.sin(np.pi * x)
    model = fit_lbfgs(models.KAN([1, 1]), x, y, steps=6, update_grid_at=(0,))
    report = model.auto_symbolic(x)
    (edge,) = report
    print(f"auto_symbolic on sin(pi x): {edge['function']} with R^2 {edge['r2']:.6f}, params {edge['params']}")
    assert edge["function"] == "sin" and edge["r2"] > 0.99
    fixed = model.auto_symbolic(x, functions=["sin"], fix=True)
    assert model.layers[0].symbolic_index[0, 0] == nn.kan_symbolic.SYMBOLIC_NAMES.index("sin")
    a, b, c, d = fixed[0]["params"]
    assert_close(model(x).numpy(), a * np.sin(b * x + c) + d, 1e-12, "fixed edge")
    assert rmse(model, x, y) < 0.05
    xt = lamina.tensor(x[:5], requires_grad=True, dtype=np.float64)
    assert lamina.gradcheck(lambda t: model(t), xt)
    model.layers[0].unfix_symbolic(0, 0)
    assert model.layers[0].symbolic_index[0, 0] == -1
    with pytest.raises(ValueError, match="unknown function"):
        model.layers[0].fix_symbolic(0, 0, "cosh", (1, 1, 0, 0))


def test_fit_symbolic_ranks_the_library():
    x = np.linspace(0.1, 2.0, 80)
    fits = nn.fit_symbolic(x, 3 * np.log(2 * x + 0.5) - 1)
    assert fits[0].function == "log" and fits[0].r2 > 0.9999
    assert [f.r2 for f in fits] == sorted((f.r2 for f in fits), reverse=True)
    assert nn.fit_symbolic(x, x ** 2, functions=["x^2"])[0].r2 > 1 - 1e-12


def test_plot_writes_a_png(tmp_path, float64):
    model = models.KAN([2, 2, 1])
    x = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    path = tmp_path / "edges.png"
    fig = model.plot(x, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(ax.axison for ax in fig.axes) == 2 * 2 + 2 * 1
    assert list(tmp_path.iterdir()) == [path]                     # no temporary file left behind


def test_state_dict_round_trip_and_regularization(trained, float64):
    model, x, _, _ = trained
    model = model.prune(x, threshold=0.0)
    model.layers[0].fix_symbolic(1, 0, "tanh", (1.0, 2.0, 0.0, 0.5))
    again = models.KAN.from_config(model.get_config())
    again.load_state_dict(model.state_dict())
    assert_close(again(x).numpy(), model(x).numpy(), 1e-14, "reloaded outputs")
    total = sum(float(layer.regularization_loss(0.5, 2.0).numpy()) for layer in model.layers)
    assert abs(float(model.regularization_loss(0.5, 2.0).numpy()) - total) < 1e-12


def test_float32_model_runs():
    model = models.KAN([3, 2])
    out = model(np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (4, 2)


def test_kan_errors(float64):
    with pytest.raises(ValueError, match="widths"):
        models.KAN([3])
    with pytest.raises(ValueError, match="grid_size"):
        models.KAN([2, 1], grid_size=0)
    model = models.KAN([2, 3, 1])
    assert model.compute_output_shape((None, 2)) == (None, 1)
    with pytest.raises(ShapeError, match=r"\(batch, \.\.\., 2\)"):
        model.compute_output_shape((None, 3))
    with pytest.raises(ShapeError, match="2 features"):
        model(np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"\(batch, 2\)"):
        model.prune(np.zeros((4, 3)))


def test_readme_kan_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_readme_section("Kolmogorov-Arnold networks")
