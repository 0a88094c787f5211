"""Zoo models, lamina against PyTorch: inference and training throughput (images/s).

ResNet-18, VGG11, MobileNet v1 and GoogLeNet are built in lamina (``lamina.models``) and
in PyTorch (the tests' builders in tests/models/torch_zoo.py; torchvision is not needed) and run
in the same process, interleaved, with batch 8:

* inference: evaluation mode, no gradient, at the native 224x224 resolution; PyTorch in
  NCHW and in channels_last;
* training: one SGD-with-momentum step (forward, cross-entropy, backward, update) at a
  reduced resolution (TRAIN_SIZE, so that a run stays well under a minute).

The medians of REPEATS timed runs (after WARMUP untimed ones) are compared; the ratio is
lamina's throughput over PyTorch's best layout (1.0 = as fast as PyTorch). Before timing,
the torchvision-layout models get the PyTorch model's weights through
``load_torchvision_state_dict`` and the outputs are compared (max abs difference printed).

Usage: python benchmarks/zoo_vs_torch.py [REPEATS]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.models import load_torchvision_state_dict
from lamina.models.vgg import VGG_CONFIGS

BATCH = 8
INFER_SIZE = 224
TRAIN_SIZE = 128
REPEATS = 5
WARMUP = 1


# -- PyTorch builders: the tests' torchvision-layout references (torchvision is not needed) ------
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "models"))
import torch_zoo  # noqa: E402

CASES = {
    "ResNet-18": (models.resnet18, lambda: torch_zoo.ResNet(torch_zoo.BasicBlock, (2, 2, 2, 2)), True),
    "VGG11": (models.vgg11, lambda: torch_zoo.VGG(VGG_CONFIGS[11]), True),
    "MobileNet": (lambda **kw: models.mobilenet(classifier_activation=None, **kw), torch_zoo.mobilenet, False),
    "GoogLeNet": (models.googlenet, lambda: torch_zoo.GoogLeNet(aux_logits=False), True),
}


SETTLE_S = 0.2

# -- timing ---------------------------------------------------------------------------------
def _median_times(steps: dict, repeats: int) -> dict:
    """Interleave the systems' steps; the median seconds per step of each."""
    for _ in range(WARMUP):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            time.sleep(SETTLE_S)             # the other library's worker threads go quiet
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _inference_steps(model, tmodel, x):
    model.eval()
    tmodel.eval()
    xl = lamina.tensor(x)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
    tmodel_cl = tmodel  # the same module; channels_last inputs switch PyTorch to its NHWC kernels

    def lamina_step():
        with lamina.no_grad():
            model(xl)

    def torch_nchw():
        with torch.inference_mode():
            tmodel(x_nchw)

    def torch_cl():
        with torch.inference_mode():
            tmodel_cl(x_cl)

    return {"lamina": lamina_step, "torch NCHW": torch_nchw, "torch channels_last": torch_cl}


def _training_steps(model, tmodel, x, labels):
    model.train()
    tmodel.train()
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=1e-3, momentum=0.9)
    xl = lamina.tensor(x)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(labels)
    loss_fn = torch.nn.CrossEntropyLoss()

    def lamina_step():
        out = model(xl)
        loss = F.categorical_cross_entropy(out, labels, from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def torch_step(inputs):
        def step():
            topt.zero_grad()
            loss_fn(tmodel(inputs), yt).backward()
            topt.step()
        return step

    return {"lamina": lamina_step, "torch NCHW": torch_step(x_nchw), "torch channels_last": torch_step(x_cl)}


def _report(kind: str, name: str, size: int, medians: dict) -> float:
    ips = {k: BATCH / v for k, v in medians.items()}
    best = max(ips["torch NCHW"], ips["torch channels_last"])
    ratio = ips["lamina"] / best
    print(f"{name:10s} {kind:9s} {size:3d}px  lamina {ips['lamina']:7.1f} img/s   torch NCHW "
          f"{ips['torch NCHW']:7.1f}   torch channels_last {ips['torch channels_last']:7.1f}   "
          f"ratio {ratio:.2f} (vs channels_last {ips['lamina'] / ips['torch channels_last']:.2f})", flush=True)
    return ratio


def main(repeats: int = REPEATS) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x_inf = rng.standard_normal((BATCH, INFER_SIZE, INFER_SIZE, 3)).astype(np.float32)
    x_train = rng.standard_normal((BATCH, TRAIN_SIZE, TRAIN_SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, BATCH)
    print(f"batch {BATCH}, {repeats} timed runs (median), torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, numpy {np.__version__}")
    ratios = {}
    for name, (build, build_torch, torchvision_layout) in CASES.items():
        model = build(input_shape=(INFER_SIZE, INFER_SIZE, 3))
        tmodel = build_torch()
        model.build(model.input_shape)
        if torchvision_layout:
            load_torchvision_state_dict(model, tmodel.state_dict())
            model.eval()
            tmodel.eval()
            with lamina.no_grad():
                ours = model(lamina.tensor(x_inf[:2])).numpy()
            with torch.no_grad():
                theirs = tmodel(torch.from_numpy(x_inf[:2].transpose(0, 3, 1, 2).copy())).numpy()
            print(f"{name}: same weights, max |lamina - torch| = {np.abs(ours - theirs).max():.2e} "
                  f"(|torch| max {np.abs(theirs).max():.2e})")
        medians = _median_times(_inference_steps(model, tmodel, x_inf), repeats)
        ratios[(name, "inference")] = _report("inference", name, INFER_SIZE, medians)
        train_model = build(input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3))
        train_model.build(train_model.input_shape)
        medians = _median_times(_training_steps(train_model, build_torch(), x_train, labels), repeats)
        ratios[(name, "training")] = _report("training", name, TRAIN_SIZE, medians)
        del model, tmodel, train_model
    print("\nratios (lamina / best PyTorch layout):")
    for (name, kind), r in ratios.items():
        print(f"  {name:10s} {kind:9s} {r:.2f}")
    return ratios


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)
