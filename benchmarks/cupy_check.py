"""Every op, layer, optimizer and a short training run on CuPy, against the same run on NumPy.

Each case builds its inputs from one seed, runs forward and backward once with
``backend.use('numpy')`` and once with ``backend.use('cupy')``, and compares every output
and gradient. Cases run in float64 (tight tolerances) unless they say otherwise. A failing
case prints its error and the last lines of its traceback; the run goes on, and the exit
status is the number of failures. Needs a GPU and CuPy; prints the ratio of the CuPy and
NumPy times of a LeNet-5 training step at the end.

    python benchmarks/cupy_check.py [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import time
import traceback

import numpy as np

import lamina
from lamina import backend, nn, optim
from lamina import functional as F

CASES: dict = {}


def case(name: str, dtype=np.float64, rtol: float = 1e-9):
    def register(fn):
        CASES[name] = (fn, dtype, rtol)
        return fn
    return register


def _t(*shape, seed=0, positive=False, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return lamina.tensor(a, requires_grad=grad, dtype=lamina.get_default_dtype())


def _up(y, seed=1):
    return np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)


def _vjp(op, *inputs):
    """op(*inputs) and the gradients of every input for one random upstream gradient."""
    y = op(*inputs)
    y.backward(backend.xp.asarray(_up(y)))
    return [y.data] + [t.grad for t in inputs if isinstance(t, lamina.Tensor) and t.requires_grad]


def unary(name, op, shape=(3, 4, 5), positive=False, **kw):
    case(name, **kw)(lambda: _vjp(op, _t(*shape, positive=positive)))


for _name, _op in {
    "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "abs": F.abs, "sigmoid": F.sigmoid, "tanh": F.tanh,
    "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "selu": F.selu, "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, "tanh"), "silu": F.silu, "softplus": F.softplus, "mish": F.mish,
    "hard_sigmoid": F.hard_sigmoid, "hard_swish": F.hard_swish, "softmax": F.softmax,
    "log_softmax": F.log_softmax, "clip": lambda z: F.clip(z, -0.5, 0.5), "sum": lambda z: F.sum(z, axis=1),
    "mean": lambda z: F.mean(z, axis=(0, 2)), "max": lambda z: F.max(z, axis=-1), "var": lambda z: F.var(z, axis=0),
    "reshape": lambda z: F.reshape(z, (12, 5)), "transpose": lambda z: F.transpose(z, (2, 0, 1)),
    "getitem": lambda z: z[1:, ::2, [0, 3]], "pad": lambda z: F.pad(z, ((0, 0), (1, 2), (2, 1))),
    "flatten": F.flatten, "power": lambda z: F.power(z, 3), "square_method": lambda z: z * z + 2 * z - 1,
}.items():
    unary(_name, _op, positive=_name in ("log", "sqrt"))

for _act in ("relu", "tanh", "sigmoid", "relu6", "leaky_relu", "elu"):
    unary(f"big_{_act}", nn.get_activation(_act), shape=(64, 64, 64), dtype=np.float32, rtol=1e-5)

case("matmul")(lambda: _vjp(F.matmul, _t(4, 5), _t(5, 3, seed=1)))
case("broadcast_add_mul")(lambda: _vjp(lambda a, b: (a + b) * b - a / (b * b + 1), _t(4, 1, 3), _t(5, 3, seed=1)))
case("concat_stack")(lambda: _vjp(lambda a, b: F.concat([F.stack([a, b]), F.stack([b, a])], axis=2),
                                  _t(3, 4), _t(3, 4, seed=1)))
case("where_maximum")(lambda: _vjp(lambda a, b: F.where(a.data > 0, F.maximum(a, b), F.minimum(a, b)),
                                   _t(3, 4), _t(3, 4, seed=1)))


def _labels(n, k, seed=2):
    return backend.xp.asarray(np.random.default_rng(seed).integers(0, k, n))


case("cross_entropy")(lambda: _vjp(lambda z: F.categorical_cross_entropy(z, _labels(6, 4), from_logits=True),
                                   _t(6, 4)))
case("cross_entropy_smoothing")(lambda: _vjp(
    lambda z: F.categorical_cross_entropy(z, _labels(6, 4), from_logits=True, label_smoothing=0.1), _t(6, 4)))
case("binary_cross_entropy")(lambda: _vjp(
    lambda z: F.binary_cross_entropy(F.sigmoid(z), backend.xp.asarray((np.arange(6) % 2).reshape(6, 1) * 1.0)),
    _t(6, 1)))
case("mse")(lambda: _vjp(lambda a, b: F.mean_squared_error(a, b), _t(6, 3), _t(6, 3, seed=1, grad=False)))
for _name, _loss in {"mae": F.mean_absolute_error, "huber": F.huber, "smooth_l1": F.smooth_l1}.items():
    case(_name)(lambda f=_loss: _vjp(f, _t(6, 3), _t(6, 3, seed=1)))
case("hinge")(lambda: _vjp(lambda z: F.hinge(z, backend.xp.asarray(np.sign(np.arange(6) - 2.5).reshape(6, 1))),
                           _t(6, 1)))
case("multiclass_hinge")(lambda: _vjp(lambda z: F.multiclass_hinge(z, _labels(6, 4)), _t(6, 4)))
case("nll")(lambda: _vjp(lambda z: F.nll_loss(F.log_softmax(z), _labels(6, 4)), _t(6, 4)))
case("kl_divergence")(lambda: _vjp(lambda a, b: F.kl_divergence(F.log_softmax(a), F.softmax(b)), _t(6, 4),
                                   _t(6, 4, seed=1)))

# convolutions: each kernel plan (1x1, rows, flat, im2col, toeplitz), groups, depthwise, dilation, FFT
for _name, (_x, _w, _kw) in {
    "conv_1x1": ((2, 6, 6, 8), (4, 1, 1, 8), {}),
    "conv_lenet1": ((4, 12, 12, 1), (6, 5, 5, 1), {}),
    "conv_lenet2": ((4, 14, 14, 6), (16, 5, 5, 6), {}),
    "conv_3x3_32": ((2, 8, 8, 32), (32, 3, 3, 32), {"padding": "same"}),
    "conv_3x3_64_stride2": ((2, 9, 9, 64), (16, 3, 3, 64), {"stride": 2, "padding": 1}),
    "conv_wide": ((2, 32, 32, 16), (16, 3, 3, 16), {"padding": 1}),
    "conv_groups": ((2, 7, 7, 8), (6, 3, 3, 4), {"groups": 2}),
    "conv_depthwise": ((2, 7, 7, 4), (8, 3, 3, 1), {"groups": 4, "padding": "same"}),
    "conv_dilated": ((2, 9, 9, 3), (4, 3, 3, 3), {"dilation": 2}),
    "conv_fft": ((2, 9, 9, 3), (4, 5, 5, 3), {"algorithm": "fft", "padding": 2}),
}.items():
    case(_name)(lambda x=_x, w=_w, kw=_kw: _vjp(lambda a, b, c: F.conv2d(a, b, c, **kw), _t(*x), _t(*w, seed=1),
                                               _t(w[0], seed=2)))

case("conv_transpose")(lambda: _vjp(lambda a, b, c: F.conv_transpose2d(a, b, c, stride=2, padding=1,
                                                                       output_padding=1),
                                    _t(2, 5, 5, 6), _t(6, 3, 3, 4, seed=1), _t(4, seed=2)))
case("max_pool")(lambda: _vjp(lambda z: F.max_pool2d(z, 3, 2, padding=1), _t(2, 9, 9, 4)))
case("max_pool_2x2")(lambda: _vjp(lambda z: F.max_pool2d(z, 2), _t(2, 8, 8, 4)))
case("avg_pool")(lambda: _vjp(lambda z: F.avg_pool2d(z, 3, 2, ceil_mode=True), _t(2, 8, 8, 4)))
case("global_avg_pool")(lambda: _vjp(F.global_avg_pool2d, _t(2, 5, 5, 3)))
case("upsample_nearest")(lambda: _vjp(lambda z: F.upsample2d(z, (2, 3)), _t(2, 4, 5, 3)))
case("upsample_bilinear")(lambda: _vjp(lambda z: F.upsample2d(z, 2, interpolation="bilinear"), _t(2, 4, 5, 3)))
case("zero_pad_crop")(lambda: _vjp(lambda z: F.crop2d(F.zero_pad2d(z, ((1, 2), (0, 1))), (2, 1)), _t(2, 5, 5, 3)))


def layer_case(name, make, shape, train=True, **kw):
    def run():
        lamina.manual_seed(0)
        layer = make()
        x = _t(*shape)
        layer(x)
        layer.train(train)
        out = _vjp(layer, x)
        return out + [p.grad for p in layer.parameters() if p.grad is not None]
    case(name, **kw)(run)


for _name, (_make, _shape) in {
    "Dense": (lambda: nn.Dense(5, activation="relu"), (4, 6)),
    "Conv2D": (lambda: nn.Conv2D(4, 3, padding="same", activation="tanh"), (2, 6, 6, 3)),
    "SeparableConv2D": (lambda: nn.SeparableConv2D(5, 3, depth_multiplier=2), (2, 6, 6, 3)),
    "Conv2DTranspose": (lambda: nn.Conv2DTranspose(3, 3, stride=2, padding="same"), (2, 4, 4, 5)),
    "BatchNorm_image": (lambda: nn.BatchNorm(), (4, 5, 5, 3)),
    "BatchNorm_dense": (lambda: nn.BatchNorm(), (8, 6)),
    "LayerNorm": (lambda: nn.LayerNorm(), (4, 6)),
    "GroupNorm": (lambda: nn.GroupNorm(2), (2, 4, 4, 6)),
    "LocalResponseNorm": (lambda: nn.LocalResponseNorm(), (2, 4, 4, 8)),
    "UpSampling2D": (lambda: nn.UpSampling2D(2, interpolation="bilinear"), (2, 4, 4, 3)),
    "Conv2D_orthogonal": (lambda: nn.Conv2D(4, 3, kernel_init="orthogonal"), (2, 6, 6, 3)),
    "PReLU": (lambda: nn.PReLU(), (2, 4, 4, 3)),
    "Dropout": (lambda: nn.Dropout(0.5), (6, 10)),
    "DropConnect": (lambda: nn.DropConnect(nn.Dense(4), 0.3), (6, 5)),
    "MaxPool2D": (lambda: nn.MaxPool2D(2), (2, 6, 6, 3)),
    "RandomFlip": (lambda: nn.RandomFlip(), (4, 5, 5, 1)),
    "RandomCrop": (lambda: nn.RandomCrop(4, padding=1), (4, 5, 5, 1)),
    "RandomRotation": (lambda: nn.RandomRotation(15), (4, 5, 5, 1)),
    "RandomGaussianBlur": (lambda: nn.RandomGaussianBlur(3), (4, 5, 5, 1)),
    "RandomBrightness": (lambda: nn.RandomBrightness(0.2), (4, 5, 5, 3)),
    "RandomContrast": (lambda: nn.RandomContrast(0.2), (4, 5, 5, 3)),
    "RandomSaturation": (lambda: nn.RandomSaturation(0.2), (4, 5, 5, 3)),
    "Conv1D_causal": (lambda: nn.Conv1D(4, 3, padding="causal", dilation=2), (2, 9, 3)),
    "GlobalMaxPool1D": (lambda: nn.GlobalMaxPool1D(), (2, 5, 3)),
    "SimpleRNN": (lambda: nn.SimpleRNN(5, return_sequences=True), (3, 4, 6)),
    "GRU": (lambda: nn.GRU(5, return_sequences=True), (3, 4, 6)),
    "LSTM": (lambda: nn.LSTM(5), (3, 4, 6)),
    "Bidirectional_LSTM": (lambda: nn.Bidirectional(nn.LSTM(5, return_sequences=True)), (3, 4, 6)),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(6, 2), (3, 4, 6)),
}.items():
    layer_case(_name, _make, _shape)
layer_case("BatchNorm_eval", lambda: nn.BatchNorm(), (4, 5, 5, 3), train=False)


case("causal_attention")(lambda: _vjp(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True),
                                      _t(2, 5, 4), _t(2, 5, 4, seed=1), _t(2, 5, 3, seed=2)))


@case("Embedding")
def _embedding():
    lamina.manual_seed(0)
    layer = nn.Embedding(7, 3, padding_idx=0)
    ids = backend.xp.asarray(np.random.default_rng(0).integers(0, 7, (4, 5)))
    return _vjp(layer, lamina.tensor(ids)) + [layer.weight.grad]


def training_case(name, make_model, make_optimizer, shape, classes, steps=3, dtype=np.float32, rtol=1e-4):
    def run():
        lamina.manual_seed(0)
        model = make_model()
        x = np.random.default_rng(0).standard_normal((16,) + shape)
        y = np.random.default_rng(1).integers(0, classes, 16)
        model(lamina.tensor(x[:2]))
        opt = make_optimizer(model)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = F.categorical_cross_entropy(model(lamina.tensor(x)), backend.xp.asarray(y), from_logits=True)
            loss.backward()
            opt.step()
            losses.append(loss.data)
        return losses + [p.data for p in model.parameters()]
    case(name, dtype, rtol)(run)


training_case("lenet5_adam", lambda: lamina.models.lenet5(), lambda m: optim.Adam(m, lr=1e-3), (32, 32, 1), 10)
training_case("mlp_sgd_nesterov", lambda: lamina.models.mlp((32, 16), input_shape=(20,)),
              lambda m: optim.SGD(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4), (20,), 10)
for _opt in ("AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "Adadelta", "RAdam"):
    training_case(f"mlp_{_opt.lower()}", lambda: lamina.models.mlp((32,), input_shape=(20,)),
                  lambda m, o=_opt: getattr(optim, o)(m, lr=1e-2), (20,), 10)
# no bias before the batch norm: its gradient is 0 up to rounding, which Adam's normalised
# steps would turn into different noise on each machine
training_case("vgg_bn_dropout", lambda: nn.Sequential([
    nn.Conv2D(8, 3, padding="same", use_bias=False), nn.BatchNorm(), nn.ReLU(), nn.MaxPool2D(2),
    nn.Conv2D(16, 3, padding="same", activation="relu"), nn.GlobalAvgPool2D(), nn.Dropout(0.3), nn.Dense(10)]),
    lambda m: optim.Adam(m, lr=1e-3), (16, 16, 3), 10)


@case("char_gru_language_model", dtype=np.float32, rtol=1e-4)
def _language_model():
    lamina.manual_seed(0)
    model = lamina.models.rnn_language_model(11, embed_dim=4, hidden=8, cell="gru")
    x = backend.xp.asarray(np.random.default_rng(0).integers(0, 11, (6, 9)))
    y = np.random.default_rng(1).integers(0, 11, (6, 9))
    y[:, -2:] = -100
    model(lamina.tensor(x[:1]))
    opt = optim.Adam(model, lr=1e-2)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.categorical_cross_entropy(model(lamina.tensor(x)), backend.xp.asarray(y), from_logits=True,
                                           ignore_index=-100)
        loss.backward()
        opt.step()
        losses.append(loss.data)
    return losses + [p.data for p in model.parameters()]


@case("trainer_fit_evaluate_save_load", dtype=np.float32, rtol=1e-4)
def _trainer():
    import tempfile
    from pathlib import Path

    from lamina.train import Trainer

    lamina.manual_seed(0)
    data = lamina.data.load_digits()
    x, y = data[0][:256].astype(np.float32) / 255, data[1][:256]
    model = lamina.models.lenet5(input_shape=x.shape[1:])
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=1e-3), verbose=0)
    history = trainer.fit((x, y), epochs=1, batch_size=64, seed=0)
    metrics = trainer.evaluate((x, y))
    with tempfile.TemporaryDirectory() as tmp:
        lamina.save(model, Path(tmp) / "m.lamina")
        again = lamina.load(Path(tmp) / "m.lamina")
        out = again(lamina.tensor(x[:8])).data
    return [np.asarray(history["loss"]), np.asarray(metrics["accuracy"]), out,
            trainer.predict(x[:8])]


def _compare(ref, got, rtol) -> str | None:
    if len(ref) != len(got):
        return f"{len(got)} results on CuPy, {len(ref)} on NumPy"
    for k, (a, b) in enumerate(zip(ref, got)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return f"result {k}: shape {b.shape} on CuPy, {a.shape} on NumPy"
        scale = np.abs(a).max() if a.size else 0.0
        err = np.abs(a - b).max() if a.size else 0.0
        if err > rtol * (scale + 1e-30):
            return f"result {k}: max |difference| {err:.3g} against a scale of {scale:.3g} (rtol {rtol})"
    return None


def _run(fn, dtype, where: str) -> list:
    backend.use(where)
    lamina.set_default_dtype(dtype)
    lamina.manual_seed(0)
    return [backend.to_numpy(a) for a in fn()]


def _step_time(where: str, repeats: int = 20) -> float:
    backend.use(where)
    lamina.set_default_dtype(np.float32)
    lamina.manual_seed(0)
    model = lamina.models.lenet5()
    x = lamina.tensor(np.random.default_rng(0).standard_normal((128, 32, 32, 1)))
    y = backend.xp.asarray(np.random.default_rng(1).integers(0, 10, 128))
    opt = optim.Adam(model, lr=1e-3)

    def step():
        opt.zero_grad()
        loss = F.categorical_cross_entropy(model(x), y, from_logits=True)
        loss.backward()
        opt.step()
        return loss.data
    for _ in range(3):
        step()
    if where == "cupy":
        backend.xp.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if where == "cupy":
        backend.xp.cuda.Device().synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    failures = 0
    for name, (fn, dtype, rtol) in CASES.items():
        if args.k not in name:
            continue
        try:
            ref = _run(fn, dtype, "numpy")
            got = _run(fn, dtype, "cupy")
            problem = _compare(ref, got, rtol)
        except Exception as exc:  # report and go on: the point is the list of what fails
            tb = traceback.format_exception(exc)
            problem = f"{type(exc).__name__}: {exc}\n" + "".join(tb[-3:]).rstrip()
        finally:
            backend.use("numpy")
        print(f"{'FAIL' if problem else 'ok  '} {name}" + (f"\n     {problem}" if problem else ""), flush=True)
        failures += problem is not None
    if not args.k:
        numpy_s, cupy_s = _step_time("numpy"), _step_time("cupy")
        backend.use("numpy")
        print(f"LeNet-5 training step, batch 128: CuPy {cupy_s * 1e3:.2f} ms, NumPy {numpy_s * 1e3:.2f} ms, "
              f"CuPy/NumPy speed {numpy_s / cupy_s:.2f}x")
    print(f"{failures} of {len(CASES)} cases failed")
    return failures


if __name__ == "__main__":
    raise SystemExit(main())
