"""Training and inference throughput (samples/s) of lamina and PyTorch on the same models.

Same architecture, batch size and optimizer (SGD with momentum 0.9) in the same process,
interleaved repeats, median. PyTorch runs with as many threads as cores, in its default
NCHW layout and in channels_last; the better of the two is the reference for the ratio,
which is the median over rounds of the ratio within each round (see ``paired_ratio``).
Each timed block follows SETTLE_S seconds of untimed steps of the same system.
The MLP is also run as a plain hand-written NumPy step (the ceiling of a NumPy framework)
and in HIPS autograd (a NumPy autodiff peer) when it is installed.

Two character language models (ids in, a next-character label per step: a GRU, and a causal
pre-norm Transformer with the sinusoidal encoding) run against the same models built from
torch.nn modules.

    python benchmarks/train_vs_torch.py [--repeats 7] [--steps 10]
        [--only mlp,lenet5,vgg,vgg_bn,char_gru,char_transformer]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from pairing import paired_ratios

import lamina
from lamina import functional as F
from lamina import nn, optim

LR = 0.01
SETTLE_S = 0.2


# -- the models in both frameworks -------------------------------------------------------
def lamina_mlp():
    return nn.Sequential(nn.Flatten(), nn.Dense(512, activation="relu"), nn.Dense(512, activation="relu"),
                         nn.Dense(10))


def torch_mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))


def lamina_lenet5():
    return lamina.models.lenet5()[:-1]  # logits; the loss fuses the softmax


def torch_lenet5():
    T = torch.nn
    return T.Sequential(T.Conv2d(1, 6, 5), T.Tanh(), T.AvgPool2d(2), T.Conv2d(6, 16, 5), T.Tanh(), T.AvgPool2d(2),
                        T.Flatten(), T.Linear(400, 120), T.Tanh(), T.Linear(120, 84), T.Tanh(), T.Linear(84, 10))


def lamina_vgg(bn: bool):
    layers = []
    for i, k in enumerate((32, 32, 64, 64)):
        layers.append(nn.Conv2D(k, 3, padding="same", use_bias=not bn))
        if bn:
            layers.append(nn.BatchNorm())
        layers.append(nn.ReLU())
        if i % 2 == 1:
            layers.append(nn.MaxPool2D(2))
    layers += [nn.Flatten(), nn.Dense(256, activation="relu"), nn.Dense(10)]
    return nn.Sequential(*layers)


def torch_vgg(bn: bool):
    T = torch.nn
    layers, c = [], 3
    for i, k in enumerate((32, 32, 64, 64)):
        layers.append(T.Conv2d(c, k, 3, padding=1, bias=not bn))
        if bn:
            layers.append(T.BatchNorm2d(k))
        layers.append(T.ReLU())
        if i % 2 == 1:
            layers.append(T.MaxPool2d(2))
        c = k
    layers += [T.Flatten(), T.Linear(64 * 8 * 8, 256), T.ReLU(), T.Linear(256, 10)]
    return T.Sequential(*layers)


VOCAB, STEPS = 65, 64          # a character language model: Tiny Shakespeare's 65 characters, windows of 64


def lamina_char_gru():
    return lamina.models.rnn_language_model(VOCAB, embed_dim=32, hidden=128, cell="gru")


class _TorchCharGRU(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, 32)
        self.gru = torch.nn.GRU(32, 128, batch_first=True)
        self.dense = torch.nn.Linear(128, VOCAB)

    def forward(self, ids):
        return self.dense(self.gru(self.embedding(ids))[0])


def lamina_char_transformer():
    return lamina.models.transformer_language_model(VOCAB, d_model=128, num_heads=4, num_layers=2,
                                                    dim_feedforward=512, max_len=STEPS)


class _TorchCharTransformer(torch.nn.Module):
    """Embedding, the sinusoidal encoding, 2 causal pre-norm encoder layers, LayerNorm, Linear."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, 128)
        self.register_buffer("encoding", torch.tensor(lamina.nn.transformer.sinusoidal_encoding(STEPS, 128,
                                                                                               np.float32)))
        layer = torch.nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(128)
        self.dense = torch.nn.Linear(128, VOCAB)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(STEPS))

    def forward(self, ids):
        x = self.embedding(ids) + self.encoding[:ids.shape[1]]
        return self.dense(self.norm(self.layers(x, mask=self.mask, is_causal=True)))


CASES = {
    "mlp": ("MLP 784-512-512-10", 128, (28, 28, 1), lamina_mlp, torch_mlp),
    "lenet5": ("LeNet-5 (tanh, avg pool)", 128, (32, 32, 1), lamina_lenet5, torch_lenet5),
    "vgg": ("VGG-style 32x32x3", 64, (32, 32, 3), lambda: lamina_vgg(False), lambda: torch_vgg(False)),
    "vgg_bn": ("VGG-style 32x32x3 + batch norm", 64, (32, 32, 3), lambda: lamina_vgg(True), lambda: torch_vgg(True)),
    "char_gru": ("character GRU language model (embedding 32, GRU 128, 64 steps)", 64, (STEPS,), lamina_char_gru,
                 _TorchCharGRU),
    "char_transformer": ("character Transformer language model (2 causal layers, d 128, 64 steps)", 64, (STEPS,),
                         lamina_char_transformer, _TorchCharTransformer),
}
SEQUENCE_CASES = ("char_gru", "char_transformer")      # integer ids in, a label per step


# -- timing ------------------------------------------------------------------------------
class LaminaRunner:
    def __init__(self, build, x, y):
        self.model = build()
        self.model(lamina.tensor(x[:2]))
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=0.9)
        self.x, self.y = x, y

    def train_step(self):
        self.model.train()
        cost = F.categorical_cross_entropy(self.model(lamina.tensor(self.x)), self.y, from_logits=True)
        self.opt.zero_grad()
        cost.backward()
        self.opt.step()

    def infer(self):
        self.model.eval()
        with lamina.no_grad():
            self.model(lamina.tensor(self.x))


class TorchRunner:
    def __init__(self, build, x, y, channels_last: bool):
        self.model = build()
        xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else torch.tensor(x)
        if channels_last and xt.shape[-1] > 1 and x.ndim == 4:
            self.model = self.model.to(memory_format=torch.channels_last)
            xt = xt.contiguous(memory_format=torch.channels_last)
        self.x, self.y = xt, torch.tensor(y)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=0.9)

    def train_step(self):
        self.model.train()
        out = self.model(self.x)
        cost = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), self.y.reshape(-1))
        self.opt.zero_grad()
        cost.backward()
        self.opt.step()

    def infer(self):
        self.model.eval()
        with torch.no_grad():
            self.model(self.x)


class PlainNumpyRunner:
    """The MLP step written by hand in NumPy: no graph, no loss value, every pass in place
    where it can be. What any NumPy framework's MLP step can at best approach."""

    def __init__(self, x, y):
        rng = np.random.default_rng(0)
        sizes = [784, 512, 512, 10]
        self.w = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
        self.b = [np.zeros(b, np.float32) for b in sizes[1:]]
        self.velocity = [np.zeros_like(p) for p in self.w + self.b]
        self.x, self.y = x.reshape(len(x), -1), y

    def _forward(self):
        activations = [self.x]
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            z = activations[-1] @ w
            z += b
            if i < len(self.w) - 1:
                np.maximum(z, 0, out=z)
            activations.append(z)
        return activations

    def train_step(self):
        activations = self._forward()
        dz = activations.pop()                    # scores -> softmax -> (y_hat - y) / m
        dz -= dz.max(axis=1, keepdims=True)
        np.exp(dz, out=dz)
        dz /= dz.sum(axis=1, keepdims=True)
        dz[np.arange(len(dz)), self.y] -= 1
        dz /= len(dz)
        grads_w, grads_b = [], []
        for i in range(len(self.w) - 1, -1, -1):
            a = activations[i]
            grads_w.insert(0, a.T @ dz)
            grads_b.insert(0, dz.sum(axis=0))
            if i > 0:
                dz = dz @ self.w[i].T
                dz *= a > 0
        for p, g, v in zip(self.w + self.b, grads_w + grads_b, self.velocity):
            v *= 0.9
            v += g
            p -= LR * v

    def infer(self):
        self._forward()


class AutogradRunner:
    """The MLP in HIPS autograd: the same step written against its NumPy wrapper."""

    def __init__(self, x, y):
        import autograd.numpy as anp

        from autograd import grad

        rng = np.random.default_rng(0)
        sizes = [784, 512, 512, 10]
        self.params = [(rng.standard_normal((a, b)).astype(np.float32) * np.sqrt(2 / a), np.zeros(b, np.float32))
                       for a, b in zip(sizes[:-1], sizes[1:])]
        self.velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.params]
        self.x, self.onehot = x.reshape(len(x), -1), np.eye(10, dtype=np.float32)[y]

        def cost(params, x, t):
            a = x
            for i, (w, b) in enumerate(params):
                z = anp.dot(a, w) + b
                a = anp.maximum(z, 0) if i < len(params) - 1 else z
            z = a - anp.max(a, axis=1, keepdims=True)
            logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
            return -anp.mean(anp.sum(t * logp, axis=1))

        self.grad = grad(cost)

    def train_step(self):
        grads = self.grad(self.params, self.x, self.onehot)
        new = []
        for (w, b), (gw, gb), (vw, vb) in zip(self.params, grads, self.velocity):
            vw *= 0.9
            vw += gw
            vb *= 0.9
            vb += gb
            new.append((w - LR * vw, b - LR * vb))
        self.params = new


def throughput(fn, batch: int, steps: int) -> float:
    """Samples/s over ``steps`` calls, after SETTLE_S seconds of untimed calls: run back to
    back, the other library's still-spinning worker threads would slow this one's first steps."""
    settle_until = time.perf_counter() + SETTLE_S
    while time.perf_counter() < settle_until:
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def bench(key: str, repeats: int, steps: int) -> None:
    title, batch, shape, build_l, build_t = CASES[key]
    rng = np.random.default_rng(0)
    if key in SEQUENCE_CASES:
        x = rng.integers(0, VOCAB, (batch, *shape))
        y = rng.integers(0, VOCAB, (batch, *shape))
    else:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, 10, batch)
    runners = {"lamina": LaminaRunner(build_l, x, y), "torch": TorchRunner(build_t, x, y, False)}
    if key not in SEQUENCE_CASES and (shape[-1] > 1 or key != "mlp"):
        runners["torch_cl"] = TorchRunner(build_t, x, y, True)
    if key == "mlp":
        runners["numpy"] = PlainNumpyRunner(x, y)
        try:
            runners["autograd"] = AutogradRunner(x, y)
        except ImportError:
            pass
    results = {name: {"train": [], "infer": []} for name in runners}
    for r in runners.values():  # warm-up
        r.train_step()
        if hasattr(r, "infer"):
            r.infer()
    for _ in range(repeats):
        for name, r in runners.items():
            results[name]["train"].append(throughput(r.train_step, batch, steps))
            if hasattr(r, "infer"):
                results[name]["infer"].append(throughput(r.infer, batch, steps))
    med = {n: {k: statistics.median(v) if v else float("nan") for k, v in d.items()} for n, d in results.items()}
    torch_names = [n for n in med if n.startswith("torch")]
    best_train = max(torch_names, key=lambda n: med[n]["train"])
    best_infer = max(torch_names, key=lambda n: med[n]["infer"])
    print(f"\n{title}, batch {batch}")
    for name in med:
        print(f"  {name:9s} train {med[name]['train']:9.0f} samples/s   inference {med[name]['infer']:9.0f} samples/s")
    train = paired_ratio(results["lamina"]["train"], results[best_train]["train"])
    infer = paired_ratio(results["lamina"]["infer"], results[best_infer]["infer"])
    print(f"  ratio lamina/pytorch ({best_train}): train {train}; inference ({best_infer}) {infer}")
    if "numpy" in med:
        numpy_train = paired_ratio(results["numpy"]["train"], results[best_train]["train"])
        print(f"  ratio plain NumPy/pytorch: train {numpy_train}; lamina/plain NumPy: train "
              f"{paired_ratio(results['lamina']['train'], results['numpy']['train'])}")
    if "autograd" in med:
        vs_autograd = paired_ratio(results["lamina"]["train"], results["autograd"]["train"])
        print(f"  ratio lamina/autograd: train {vs_autograd}")


def paired_ratio(ours: list[float], theirs: list[float]) -> str:
    """:func:`pairing.paired_ratios` as printed: the median and the range over rounds."""
    median, low, high = paired_ratios(ours, theirs)
    return f"{median:.2f}x (rounds {low:.2f}-{high:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"threads: torch {torch.get_num_threads()}; repeats {args.repeats} x {args.steps} steps, median")
    for key in args.only.split(","):
        bench(key, args.repeats, args.steps)


if __name__ == "__main__":
    main()
