"""The README's engine example runs and its cost falls."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def run_section(title: str) -> dict:
    """The names the first Python block after the README heading ``title`` defines, run with
    its printing captured."""
    section = README.read_text().split(title, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    return names


def test_logistic_regression_example_runs_and_learns():
    text = README.read_text()
    section = text.split("## Logistic regression with the raw engine", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    costs = [float(line.split("cost")[1]) for line in out.getvalue().splitlines()]
    assert len(costs) == 6 and costs[0] > 0.69 and costs[-1] < costs[0] / 3


def test_main_command_is_the_cli_train_job():
    text = README.read_text()
    assert "python -m pip install -e . && python -m lamina train" in text
    assert 'python -m pip install -e ".[test]" && python -m pytest' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[test]" && python -m pytest' in ci


def test_python_example_runs(tmp_path, monkeypatch):
    """The 'In Python' example, on a few random CIFAR-sized images for one epoch."""
    import numpy as np

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## In Python", 1)[1], re.S).group(1)
    assert "epochs=20" in code
    rng = np.random.default_rng(0)
    data = {name: rng.random((n, 32, 32, 3)).astype(np.float32) for name, n in (("x_train", 48), ("x_val", 16))}
    data.update(y_train=rng.integers(0, 10, 48), y_val=rng.integers(0, 10, 16))
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("epochs=20", "epochs=1"), str(README), "exec"), data)
    assert len(data["history"]["loss"]) == 1
    for name in ("cost.png", "model.safetensors", "ckpt.safetensors"):
        assert (tmp_path / name).exists(), name


def test_language_model_example_runs(monkeypatch):
    """The language-model example, on the first 1,500 real names."""
    import pytest

    import lamina.text

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## A language model", 1)[1], re.S).group(1)
    shared = README.parents[1] / "shared" / "data" / "text"
    if not shared.is_dir():
        pytest.skip("no shared text corpora beside the project")
    real = lamina.text.load_names
    monkeypatch.setattr(lamina.text, "load_names", lambda *args, **kwargs: real(shared, download=False)[:1500])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    samples = eval(out.getvalue().strip().splitlines()[-1])
    assert len(samples) == 5 and all(name.isalpha() for name in samples if name)


def test_tuning_and_analysis_example_runs():
    """The 'Tuning, looking inside, transferring, detecting' example: its search, its model and
    each tool's result behave as its comments say."""
    import numpy as np

    import lamina

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Tuning, looking inside", 1)[1], re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, str(README), "exec"), names)
    printed = out.getvalue().splitlines()
    assert float(printed[0]) == names["sweep"].suggestion and 1e-5 < names["sweep"].suggestion < 1
    assert printed[1].split()[:3] == ["trial", "lr", "score"]
    search, model, x_val, y_val = names["search"], names["model"], names["x_val"], names["y_val"]
    assert len(search.trials) == 6 and search.best.score > 0.9

    def accuracy(images):
        return float((model(lamina.tensor(images)).numpy().argmax(1) == y_val).mean())

    assert accuracy(x_val) > 0.9 and accuracy(names["fooled"]) < accuracy(x_val) - 0.3
    assert names["saliency"].shape == (8, 8, 8)
    assert (names["y_train"][names["neighbours"]] == y_val[:, None]).mean() > 0.9
    assert names["odd_or_even"](lamina.tensor(x_val[:3])).shape == (3, 2)
    np.testing.assert_allclose(names["sliding"](lamina.tensor(x_val[:3])).numpy().reshape(3, 10),
                               model(lamina.tensor(x_val[:3])).numpy(), atol=1e-5)


def test_logging_and_exporting_example_runs(tmp_path, monkeypatch):
    """The 'Logging and exporting' example writes TensorBoard runs and an ONNX model that
    ONNX Runtime runs to the lamina model's outputs."""
    import numpy as np
    import onnxruntime as ort
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import lamina

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Logging and exporting", 1)[1], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)
    for run in ("train", "validation"):
        logs = EventAccumulator(str(tmp_path / "logs" / run))
        logs.Reload()
        assert [e.step for e in logs.Scalars("epoch_loss")] == [0, 1]
    model, x = names["model"], names["x"][:5]
    (got,) = ort.InferenceSession("lenet5.onnx", providers=["CPUExecutionProvider"]).run(None, {"input": x})
    model.eval()
    np.testing.assert_allclose(got, model(lamina.tensor(x)).numpy(), rtol=1e-4, atol=1e-6)


def test_graph_and_hooks_example_runs():
    import numpy as np

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Graphs of layers, hooks", 1)[1], re.S).group(1)
    rng = np.random.default_rng(0)
    names = {"x_images": rng.random((5, 8, 8, 1)).astype(np.float32),
             "x_meta": rng.random((5, 4)).astype(np.float32)}
    exec(compile(code, str(README), "exec"), names)
    assert names["probs"].shape == (5, 10) and names["seen"] == {"add": (5, 8, 8, 8)}
    assert names["features"](names["x_images"]).shape == (5, 8, 8, 8)
    assert names["model"].num_parameters() == sum(p.size for p in names["model"].parameters())


def test_pytorch_style_pruning_and_generative_example_runs():
    """The PyTorch-style example: a ModuleList model trained on a random_split Subset, pruned
    to 80% and fine-tuned, keeps its accuracy; the VAE samples digits."""
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## PyTorch-style modules", 1)[1], re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    prune = names["prune"]
    assert abs(prune.sparsity(names["model"], pruned_only=True).fraction - 0.8) < 0.01
    assert names["trainer"].evaluate(names["test"])["accuracy"] > 0.9
    assert names["samples"].shape == (16, 8, 8, 1)
    assert 0 <= names["samples"].min() and names["samples"].max() <= 1
    assert names["history"]["loss"][-1] < names["history"]["loss"][0]


def test_distillation_quantization_and_new_layers_example_runs():
    """The distillation example: the student learns from the teacher, the int8 copy is smaller
    and as accurate, and the new layers run on the shapes given."""
    import numpy as np

    import lamina

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Distillation, quantization", 1)[1], re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    x_test, y_test = names["x_test"], names["y_test"]

    def accuracy(model):
        with lamina.no_grad():
            return float((model.eval()(x_test).numpy().argmax(axis=1) == y_test).mean())

    assert accuracy(names["student"]) > 0.9
    assert accuracy(names["small"]) > accuracy(names["teacher"]) - 0.02
    quantize = names["quantize"]
    assert quantize.model_size_bytes(names["small"]) < quantize.model_size_bytes(names["teacher"]) / 3
    assert names["out"].shape == (2, 7, 32)
    assert names["volumes"](np.zeros((1, 8, 8, 8, 1), "float32")).shape == (1, 2)
    assert names["frames"](np.zeros((1, 3, 6, 6, 1), "float32")).shape == (1, 4)


def test_second_derivatives_example_runs():
    """The second-derivatives example: its gradient-of-a-gradient equals 2 H g with H from
    torch, the Hessian-vector product equals torch's, the Hessian of sum(tanh(v)^3) is the
    diagonal of its second derivatives, and the WGAN-GP run logs finite losses."""
    import numpy as np
    import torch

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Second derivatives", 1)[1], re.S).group(1)
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)
    x, y = torch.tensor(names["x"].numpy(), dtype=torch.float64), torch.tensor(names["y"])

    def cost(w):
        return torch.nn.functional.cross_entropy(x @ w, y)

    w = torch.zeros(4, 3, dtype=torch.float64)
    g = torch.func.grad(cost)(w)
    h = torch.autograd.functional.hessian(cost, w).reshape(12, 12)
    np.testing.assert_allclose(names["curvature"], (2 * h @ g.reshape(12)).reshape(4, 3).numpy(), atol=1e-5)
    np.testing.assert_allclose(names["h_v"], (h @ torch.ones(12, dtype=torch.float64)).reshape(4, 3).numpy(),
                               atol=1e-5)
    v = np.array([0.5, -1.0])
    t = np.tanh(v)
    np.testing.assert_allclose(names["h"], np.diag(6 * t * (1 - t**2) ** 2 - 6 * t**3 * (1 - t**2)), rtol=1e-5)
    assert len(names["history"]["d_loss"]) == 5 and np.isfinite(names["history"]["g_loss"]).all()
    learner = names["learner"]
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in learner.parameters())
    assert learner[0].weight is names["weights"]["dense.weight"]      # the module keeps its own parameters
    top = names["sharpest"]
    assert len(top) == 2 and abs(top[0]) >= abs(top[1]) > 0


def test_probability_linear_algebra_and_privacy_example_runs():
    """The probability example: maximum likelihood recovers the sample mean and covariance of
    the points, eigh gives the covariance's eigenvalues, the KL matches its closed form, and
    the private run reports a finite, growing epsilon and learns the digits."""
    import numpy as np
    import pytest

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Probability, linear algebra, privacy", 1)[1], re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    points = names["points"]
    np.testing.assert_allclose(names["loc"].numpy(), points.mean(0), atol=0.02)
    np.testing.assert_allclose(names["covariance"].numpy(), np.cov(points.T, bias=True), atol=0.02)
    np.testing.assert_allclose(names["w"].numpy(), np.linalg.eigvalsh(names["covariance"].numpy()), rtol=1e-5)
    mu = float(names["loc"].numpy()[0])
    assert float(names["gap"].numpy()) == pytest.approx(np.log(2.0) + (1 + mu**2) / 8 - 0.5, rel=1e-5)
    epsilon = names["history"]["epsilon"]
    assert len(epsilon) == 3 and 0 < epsilon[0] < epsilon[1] < epsilon[2] < 10
    assert names["trainer"].evaluate((names["x"] / 255.0, names["y"]))["accuracy"] > 0.8


def test_graphs_densities_processes_and_self_supervision_example_runs():
    """The example of the newer model kinds: the flow beats a Gaussian's likelihood on the
    moons, the GP is confident near its data, the pretrained encoder's probe learns the
    digits, the integer model keeps the float model's accuracy, and the calibrated error is small."""
    import numpy as np

    names = run_section("## Graphs, densities, Gaussian processes, self-supervision")
    moons = names["moons"]
    covariance = np.cov(moons.T)
    gaussian_nll = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * covariance))
    assert names["nll"].item() < gaussian_nll - 0.5
    assert names["new_points"].shape == (500, 2)
    assert names["std"].max() < 0.5 and names["probe"]["test_accuracy"] > 0.7
    import lamina

    digits, labels = names["digits"], names["labels"]
    with lamina.no_grad():
        integer = (names["int_model"](digits[1500:]).numpy().argmax(1) == labels[1500:]).mean()
    float_accuracy = (names["test"].argmax(1) == labels[1500:]).mean()
    assert integer > float_accuracy - 0.05 and names["ece"] < 0.1


def test_segmentation_audio_and_optimizers_example_runs():
    """The segmentation and audio example: the U-Net's cost falls and its mean IoU is well
    above chance, ISTFT inverts the STFT, and the log-mel features send gradients back."""
    import numpy as np

    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Segmentation, audio, more optimizers", 1)[1], re.S).group(1)
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)
    losses = names["trainer"].history["loss"]
    assert losses[-1] < 0.7 * losses[0] and names["iou"] > 0.6
    np.testing.assert_allclose(names["again"].numpy(), names["wave"].numpy(), atol=1e-5)
    assert names["features"].shape == (1, 40, 126) and np.abs(names["wave"].grad).max() > 0


def test_transformer_blocks_detection_explanations_and_folders_example_runs(tmp_path, monkeypatch):
    """The last example: LoRA trains only its adapters, grouped-query attention keeps the
    shape, RoI features and the box loss reach their inputs, NMS keeps both boxes of two
    classes, the CAMs are maps in [0, 1], the Bayesian search finds the peak, and the image
    folder gives NHWC float batches with both labels."""
    import numpy as np

    text = README.read_text()
    section = text.split("## Transformer blocks, detection, explanations, your own images", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)
    assert names["trainable"] == 4 * (32 + 64) + 4 * (64 + 10)
    assert names["y"].shape == (2, 20, 64) and names["pooled"].shape == (2, 7, 7, 8)
    assert np.abs(names["codes"].grad).max() > 0 and list(names["kept"]) == [0, 1]
    maps = names["maps"]
    assert maps.shape == (2, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert abs(np.log10(names["best"].best_config["lr"]) + 2.5) < 0.5
    assert abs(names["best"].best_config["units"] - 90) < 30
    assert names["xb"].shape == (8, 16, 16, 3) and set(names["yb"].tolist()) == {0, 1}


def test_pytorch_names_diffusion_distributions_and_generation_example_runs():
    """The example of PyTorch's names, diffusion, the new distributions and cached generation:
    the diffusion samples lie on the moons, the classifier trained with nn.CrossEntropyLoss
    learns, the policy's gradient reaches its parameters, the Dirichlet KL matches its closed
    form, and the cached beam search finds the rerun's text."""
    import numpy as np
    import pytest
    from scipy.special import digamma, gammaln

    names = run_section("## PyTorch names, diffusion, more distributions, faster generation")
    moons = names["moons"]
    for drawn in (names["samples"], names["quick"], names["fast"]):
        nearest = np.sqrt(((drawn[:, None, :] - moons[None, ::4, :]) ** 2).sum(-1)).min(axis=1)
        assert np.mean(nearest < 0.25) > 0.8
    assert names["trainer"].evaluate((names["features"], names["labels"]))["accuracy"] > 0.9
    assert names["h"].shape == (256, 3)
    first = names["features"][:, :3]
    expected = (first - first.mean(-1, keepdims=True)) / np.sqrt(first.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(names["h"].numpy(), expected, atol=1e-4)
    assert np.all(np.isfinite(names["loc"].grad)) and np.any(names["loc"].grad != 0)
    a, b = np.array([1.0, 2.0, 3.0]), np.ones(3)
    closed = (gammaln(a.sum()) - gammaln(a).sum() - gammaln(b.sum()) + gammaln(b).sum()
              + ((a - b) * (digamma(a) - digamma(a.sum()))).sum())
    assert float(names["gap"].numpy()) == pytest.approx(closed, rel=1e-5)
    rerun = names["beam_search_text"](names["lm"], names["vocab"], prompt="the ", beam_width=4, max_length=20,
                                      rerun=True)
    assert names["best"] == rerun and names["best"].startswith("the ")
    assert len(names["drawn"]) == 4 and all(t.startswith("the ") for t in names["drawn"])


def test_preprocessing_einops_func_fft_onnx_import_and_more_models_example(tmp_path, monkeypatch):
    """The preprocessing, weighted-fit, einops, torch.func, FFT, ONNX-import, detector, GPT-2/BERT
    and augmentation example runs: the text model reads strings, the weighted fit validates every
    second epoch, the per-sample gradients equal those of each sample alone, the spectrum equals
    NumPy's, the imported network equals the original, and the SSD loss reaches every trainable
    parameter."""
    import numpy as np

    monkeypatch.chdir(tmp_path)                     # the example writes net.onnx
    names = run_section("## Preprocessing layers, weighted fits, einops, torch.func, FFT, ONNX import")
    lamina = names["lamina"]
    assert names["sentiment"](names["texts"][:3]).shape == (3, 2)
    history = names["history"]
    assert len(history["loss"]) == 6 and len(history["val_weighted_accuracy"]) == 3
    assert names["patches"].shape == (4, 4, 48) and names["pooled"].shape == (4, 4, 4, 3)
    images, net, params, func = names["images"], names["net"], names["params"], names["func"]
    alone = func.grad(names["cost"])(params, images[1])
    for name, grads in names["per_sample"].items():
        np.testing.assert_allclose(grads.numpy()[1], alone[name].numpy(), rtol=1e-4, atol=1e-5)
    signal = names["signal"].numpy()[:, :, 0]
    assert names["smooth"].shape == (8, 64, 1)
    assert names["signal"].grad.shape == (8, 64, 1) and np.all(np.isfinite(names["signal"].grad))
    spectrum = np.fft.rfft(signal, axis=1)
    np.testing.assert_allclose(names["spectrum"].numpy()[..., 0, 0], spectrum.real, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(names["spectrum"].numpy()[..., 0, 1], spectrum.imag, rtol=1e-4, atol=1e-4)
    x = images.numpy().astype(np.float32)
    np.testing.assert_allclose(names["imported"](x).numpy(), net(lamina.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
    trainable = [p for p in names["detector"].parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert names["story"].startswith("the") and len(names["story"]) > 3
    assert names["scores"].shape[0] == 2 and names["scores"].shape[-1] == len(names["wordpiece"])
    assert names["picture"].shape == (32, 32, 3) and names["picture"].dtype == np.uint8


def test_keras_speech_state_spaces_sparse_and_graph_example(tmp_path, monkeypatch):
    """The Keras-API, graph, generation, Mamba, Whisper, wav2vec 2.0, sparse, tokenizer and Darcy
    example runs: the fit validates each epoch, the graph is drawn, assisted decoding gives the
    greedy ids, the sparse gradient is each stored entry's row sum of the dense features, and
    the tokenizer decodes what it encoded."""
    import numpy as np

    monkeypatch.chdir(tmp_path)                     # the example writes graph.png
    names = run_section("## Keras's API, speech, state spaces, sparse tensors, the graph drawn")
    history = names["history"].history
    assert len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2
    assert (tmp_path / "graph.png").stat().st_size > 1000
    assert names["loss"].grad_fn.name == "Mean" and names["loss"].grad_fn.next_functions
    assert names["sampled"].shape == (2, 11)
    np.testing.assert_array_equal(names["assisted"], names["greedy"])
    assert names["next_scores"].shape == (1, 3, 16)
    assert list(names["tokens"][0, :2]) == [1, 2]
    assert all(0 not in row for row in names["labels"])       # the blank (0) never survives decoding
    rows = names["features3"].numpy().sum(axis=1)
    np.testing.assert_allclose(names["weights"].grad, rows[names["indices"][1]], rtol=1e-5)
    assert names["tokenizer"].decode(names["ids"]) == "the cat ran"
    assert np.isfinite(float(names["relative"].numpy()))


def test_keras_masks_beams_offsets_and_speech_pretraining_example():
    """The masked Keras tagger trains, the diverse beams come back with their scores best first,
    each token's offsets point at its text, the labels skip special tokens, the wav2vec 2.0
    pretraining loss has gradients and the custom function's backward gives 2x."""
    import numpy as np

    names = run_section("## Masks in Keras, beams, token offsets, speech pretraining and long form")
    assert names["tagger"].predict(names["ids"], verbose=0).shape == (3, 2)
    beams = names["beams"]
    assert beams.sequences.shape[0] == 4 and beams.sequences_scores.shape == (4,)
    assert np.all(np.diff(beams.sequences_scores[:2]) <= 0) and np.all(np.diff(beams.sequences_scores[2:]) <= 0)
    pieces = [names["tokenizer"].id_to_token(i).removeprefix("##") for i in names["batch"]["input_ids"][0]]
    for (start, end), piece in zip(names["spans"], pieces):
        assert end == start or "the cat sat"[start:end] == piece
    assert names["labels"][0][0] == -100 and names["labels"][0][1:4] == [0, 1, 2]
    assert np.isfinite(float(names["out"].loss.numpy()))
    assert all(p.grad is not None for p in names["pretraining"].quantizer.parameters())
    np.testing.assert_allclose(names["x3"].grad, [6.0])


def test_neural_ode_example():
    """The spiral has a state per time, and the ODE block's adjoint backward reaches its field."""
    names = run_section("### Neural ODEs")
    assert names["spiral"].shape == (50, 1, 2) and names["h"].shape == (4, 8)
    block = names["block"]
    assert block.nfe_forward > 0 and block.nfe_backward > 0
    assert all(p.grad is not None for p in block.parameters())


def test_crf_tagging_example():
    """The BiLSTM-CRF fits its three sentences: every entity found, the paths legal BIO."""
    names = run_section("### Sequence tagging with a CRF")
    assert names["scores"]["f1"] == 1.0
    assert names["paths"] == [list(row[m]) for row, m in zip(names["tags"], names["mask"])]


def test_meta_learning_example():
    """MAML's outer step reaches the wrapped weights through the inner steps; a 5-way 1-shot
    digit task has its relabelled classes and a finite prototypical loss."""
    import numpy as np

    names = run_section("### Meta-learning")
    assert all(p.grad is not None for p in names["model"].parameters())
    np.testing.assert_array_equal(names["y_s"], np.arange(5))
    assert len(set(names["tasks"][0].classes.tolist())) == 5
    assert np.isfinite(names["loss"].item())


def test_tokenizer_training_example():
    """The trained tokenizers have the sizes asked for, special tokens first and no unknowns on their text."""
    names = run_section("### Training tokenizers")
    tokenizer = names["tokenizer"]
    assert tokenizer.vocab_size == 50 and tokenizer.token_to_id("[UNK]") == 0
    assert names["unigram"].vocab_size == 40 and names["smaller"].vocab_size == 40
    assert "[UNK]" not in tokenizer.tokenize("the lazy fox") and len(names["ids"]) < len("the lazy fox")


def test_recommender_example():
    """NeuMF trained for three epochs ranks held-out items above chance; ALS recommends unseen items."""
    names = run_section("### Recommender systems")
    assert names["scores"]["hit_rate"] > 0.25             # 10 of 100 candidates: 0.1 by chance
    train_items = names["train"].items_of()
    assert all(not set(row) & set(train_items[user].tolist()) for user, row in enumerate(names["items"].tolist()))


def test_masked_autoencoder_and_dino_example():
    """The MAE trains and reconstructs, its encoder is probed, and the DINO run keeps a frozen
    teacher that follows the student."""
    import numpy as np

    names = run_section("### Masked autoencoders and DINO")
    assert np.isfinite(names["loss"].item()) and names["reconstructed"].shape == (32, 8, 8, 1)
    assert names["mask"].shape == (32, 4) and np.all(names["mask"].sum(axis=1) == 2)
    assert names["probe"]["test_accuracy"] > 0.3
    trainer = names["trainer"]
    assert len(names["history"]["loss"]) == 1 and trainer.iteration == 4
    assert all(not p.trainable and p.grad is None for p in trainer.teacher.parameters())


def test_model_merging_example():
    """The greedy soup scores at least its best ingredient on the rows it was chosen on, and every
    merge gives back the model's entries."""
    names = run_section("### Merging fine-tuned models")
    accuracy, ingredients = names["accuracy"], names["ingredients"]
    assert accuracy(names["greedy"]) >= max(accuracy(state) for state in ingredients)
    assert names["kept"] and set(names["kept"]) <= {0, 1, 2}
    for merged in ("soup", "halfway", "both", "without_low", "ties", "dare"):
        assert list(names[merged]) == list(names["base"])


def test_hyperband_asha_tpe_example():
    """Every search of the example finds the learning rate the objective peaks at, 10^-2.5."""
    import math

    names = run_section("### Hyperband, ASHA, TPE and pruning")
    assert names["brackets"][0] == [(27, 1), (9, 3), (3, 9), (1, 27)]
    for search in ("hb", "asha", "tpe"):
        assert abs(math.log10(names[search].best_config["lr"]) + 2.5) < 0.3


def test_nerf_example():
    """The example's NeRF fits its training rays (PSNR well above the start) and renders a view."""
    names = run_section("### Neural radiance fields")
    assert names["metrics"]["psnr"] > 15.0
    assert names["image"]["rgb"].shape == (16, 16, 3)


def test_tabular_example():
    """TabNet fits breast cancer, its importances sum to one, the other pieces give their shapes."""
    names = run_section("### Deep learning for tabular data")
    model, x, y = names["model"], names["x"], names["y"]
    assert (model(x).numpy().argmax(axis=1) == y).mean() > 0.85
    assert abs(names["importances"].sum() - 1) < 1e-5
    assert names["encoding"](x).shape == (569, 240) and names["ft"](x).shape == (569, 2)


def test_tree_search_and_alphazero_example():
    """UCT finds the block, the short AlphaZero run records its iterations, its player finishes its games."""
    names = run_section("### Tree search and AlphaZero")
    assert int(names["visits"].argmax()) == 2 and names["visits"].sum() == 300
    assert len(names["agent"].history) == 2
    assert sum(names["record"][key] for key in ("wins", "draws", "losses")) == 10


def test_conformer_and_rnnt_example():
    """The loss is finite and positive, the encoder keeps its shape, greedy decoding gives one
    label list per utterance, free of the blank."""
    names = run_section("### Conformer and the RNN-Transducer loss")
    assert names["loss"].item() > 0 and names["states"].shape == (2, 10, 16)
    assert len(names["labels"]) == 2 and all(0 <= k < 4 for row in names["labels"] for k in row)


def test_point_cloud_example():
    """The example's PointNet classifies unseen synthetic shapes and the grouping gives its shapes."""
    names = run_section("### Point clouds")
    assert names["accuracy"] > 0.85
    assert names["centres"].shape == (2, 16, 3) and names["groups"].shape == (2, 16, 8, 3)


def test_flow_matching_example():
    """The example's samples are far closer to the moons than the source is, along straight paths."""
    names = run_section("### Flow matching")
    wasserstein2, x1 = names["wasserstein2"], names["x1"]
    assert wasserstein2(names["samples"], x1) < 0.5 * wasserstein2(names["x0"], x1)
    assert names["straightness"](names["model"], names["x0"], steps=10) < 0.5


def test_spiking_network_example():
    """The rate-coded spiking network learns the digits through time, well above chance."""
    names = run_section("### Spiking neural networks")
    assert names["spk_rec"].shape == (25, 297, 10)
    assert names["spikegen"].accuracy_rate(names["spk_rec"], names["y"][1500:]) > 0.7


def test_gguf_and_qlora_example():
    """The Q8_0 round trip stays close to the float model; only the adapters train over NF4."""
    names = run_section("### llama.cpp files and 4-bit fine-tuning")
    assert names["file"].metadata["general.architecture"] == "llama"
    assert 0 < names["gap"] < 0.05 * max(1.0, abs(names["reference"]).max())
    assert names["trainable"] and all("lora" in n for n, p in names["qlora"].named_parameters() if p.requires_grad)


def test_preference_optimization_example():
    """DPO moves the tiny GPT-2's greedy completions to even digits; the reward model ranks held-out pairs."""
    names = run_section("### Preference optimization: DPO and reward models")
    dpo, even = names["dpo"], names["even"]
    assert names["history"]["val_rewards/accuracies"][-1] > 0.95
    assert even(dpo.model) > even(dpo.ref_model) + 0.2
    assert names["judge"].evaluate(names["pairs"](100))["accuracy"] > 0.9


def test_uncertainty_and_conformal_example():
    """Conformal APS sets near the stated coverage, predictive probabilities, CQR-ready intervals."""
    names = run_section("### Predictive uncertainty and conformal prediction")
    np, coverage, sets, y_test = names["np"], names["coverage"], names["sets"], names["y_test"]
    assert coverage(sets, y_test) > 0.84 and names["mean_set_size"](sets) < 2
    np.testing.assert_allclose(names["probs"].sum(axis=1), 1.0, rtol=1e-9)
    assert np.all(names["summary"].mutual_information >= -1e-12)
    lower, upper = names["intervals"]
    assert np.all(lower <= upper)


def test_vqvae_and_pixelcnn_prior_example():
    names = run_section("### Discrete latents: VQ-VAE and PixelCNN priors")
    assert names["out"].perplexity > 10
    assert names["images"].shape == (8, 8, 8, 1)
    assert names["prior"].bits_per_dim(names["maps"]).item() < 4



def test_linear_time_sequence_example_runs():
    """The linear-time sequence models example: shapes, the three retention forms agree, and
    generation adds the new tokens."""
    import numpy as np

    names = run_section("### Linear-time sequence models")
    assert names["out"].shape == names["approx"].shape == (1, 4, 512, 32)
    first = names["same"][0].numpy()
    assert all(np.allclose(s.numpy(), first, atol=1e-5) for s in names["same"])
    assert names["ids"].shape == (1, 13)


def test_sets_and_latent_arrays_example():
    names = run_section("### Sets and latent arrays")
    assert names["accuracy"] > 0.97
    assert names["logits"].shape == (4, 10) and names["scores"].shape == (2, 10)
    assert names["slots"].shape == (2, 4, 32)


def test_federated_learning_example():
    names = run_section("### Federated learning")
    accuracy = names["result"].test_accuracy
    assert len(accuracy) == 6 and accuracy[-1] > 0.85


def test_image_quality_and_style_transfer_example():
    import numpy as np

    names = run_section("### Image quality, super-resolution and style transfer")
    assert names["sr"].shape == (2, 32, 32, 3)
    assert all(np.isfinite(q.item()) for q in names["quality"])
    assert names["history"]["style"][-1] < names["history"]["style"][0] / 2


def test_neural_process_and_capsule_example():
    import numpy as np

    names = run_section("### Neural processes and capsule networks")
    task, mean, std = names["task"], names["mean"].numpy(), names["std"].numpy()
    assert mean.shape == std.shape == (8, 50, 1)
    nll = np.mean(0.5 * np.log(2 * np.pi * std ** 2) + (task.target_y - mean) ** 2 / (2 * std ** 2))
    prior_nll = np.mean(0.5 * np.log(2 * np.pi) + task.target_y ** 2 / 2)
    assert nll < prior_nll - 0.3
    assert names["out"].lengths.shape == (2, 10) and np.isfinite(names["cost"].item())



def test_audio_synthesis_example():
    import numpy as np

    names = run_section("### Audio synthesis: Griffin-Lim, resampling and WaveNet")
    assert names["rebuilt"].shape == (1, 8000) and names["upsampled"].shape == (1, 16000)
    assert names["linear"].shape == (1, 129, 126) and names["linear"].numpy().min() >= 0
    assert names["loss"].item() < 0.1
    np.testing.assert_array_equal(names["song"][0], np.tile(names["pattern"], 4))


def test_sentence_embedding_example():
    names = run_section("### Sentence embeddings and retrieval")
    assert [hit[0]["corpus_id"] for hit in names["hits"]] == [0, 1, 2, 3]
    assert names["loss"].item() < 0.1 and not names["bm25"].any()


def test_architecture_search_example_runs():
    names = run_section("### Differentiable architecture search (DARTS)")
    result = names["result"]
    assert len(result.genotypes) == 1 and len(result.genotype.reduce) == 4
    assert names["logits"].shape == names["auxiliary_logits"].shape == (8, 10)


def test_tracking_example_runs():
    names = run_section("### Multi-object tracking: SORT, ByteTrack and MOTA / IDF1")
    sort, byte = names["scores"]["SORT"], names["scores"]["ByteTrack"]
    assert byte["mota"] > sort["mota"] + 0.2 and byte["idf1"] > 0.7


def test_text_recognition_example_reads_digit_lines():
    names = run_section("### Text recognition: CRNN and CTC")
    assert len(names["read"]) == 50 and all(set(text) <= set("0123456789") for text in names["read"])
    assert names["vision"].character_error_rate(names["read"], names["test_texts"]) < 0.3


def test_anomaly_and_ood_example():
    """Deep SVDD separates the normal digit; the OOD scores separate unseen digits."""
    names = run_section("### Anomaly and out-of-distribution detection")
    zeros, others, svdd, ood_metrics = names["zeros"], names["others"], names["svdd"], names["ood_metrics"]
    x = names["x"]
    assert ood_metrics(svdd.score(x[zeros]), svdd.score(x[others])).auroc > 0.9
    assert ood_metrics(names["inside"], names["outside"]).auroc > 0.85      # the last score printed (kNN)
