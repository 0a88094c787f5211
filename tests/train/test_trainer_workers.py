"""Trainer.fit with loaders whose batches come from worker threads or from a stream."""

import numpy as np

import lamina
from lamina import nn, optim
from lamina.cli import build_parser, train
from lamina.data import ArrayDataset, DataLoader, IterableDataset, MixUp, get_worker_info
from lamina.train import Trainer


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _fit(train, **kwargs):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(2, activation="softmax"))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model, lr=0.1), verbose=0)
    history = trainer.fit(train, epochs=2, batch_size=8, seed=1, **kwargs)
    return history["loss"], trainer


def test_fit_with_workers_trains_exactly_as_without():
    x, y = _data()
    plain, _ = _fit((x, y))
    threaded, trainer = _fit((x, y), num_workers=2)
    assert plain == threaded and trainer.loader.num_workers == 2
    in_processes, trainer = _fit((x, y), num_workers=2, worker_mode="process")
    assert plain == in_processes and trainer.loader.worker_mode == "process"
    noisy = DataLoader(ArrayDataset(x, y), batch_size=8, seed=1, num_workers=2,
                       transform=lambda xb: xb + lamina.backend.rng().normal(size=xb.shape).astype(np.float32),
                       batch_transform=MixUp(0.4, num_classes=2, seed=2))
    mixed_threaded, _ = _fit(noisy)
    noisy.num_workers = 0
    noisy.load_state_dict({"epoch": 0, "generator": np.random.default_rng(1).bit_generator.state, "position": 0})
    mixed_plain, _ = _fit(noisy)
    assert mixed_plain == mixed_threaded


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(first, len(self.x), step):
            yield self.x[i], self.y[i]


def test_fit_reads_an_iterable_dataset():
    x, y = _data()
    losses, trainer = _fit(Stream(x, y))
    assert len(losses) == 2 and trainer.samples_per_epoch is None and trainer.iteration == 12
    sharded, trainer = _fit(DataLoader(Stream(x, y), batch_size=8, num_workers=2))
    assert trainer.iteration == 12 and np.isfinite(sharded).all()


def test_the_train_command_takes_workers(tmp_path):
    def run(out, *options):
        args = build_parser().parse_args(["train", "--limit", "120", "--verbose", "0", "--epochs", "1",
                                          "--out", str(out), "--mixup", "0.4", *options])
        assert args.workers == (2 if options else 0)
        return train(args)

    run(tmp_path / "plain")
    run(tmp_path / "threads", "--workers", "2")
    run(tmp_path / "processes", "--worker-processes", "--workers", "2")
    plain = lamina.load_bundle(tmp_path / "plain" / "model.safetensors").model.state_dict()
    for kind in ("threads", "processes"):
        other = lamina.load_bundle(tmp_path / kind / "model.safetensors").model.state_dict()
        for name, values in plain.items():
            np.testing.assert_array_equal(np.asarray(other[name]), np.asarray(values), err_msg=f"{kind}: {name}")
