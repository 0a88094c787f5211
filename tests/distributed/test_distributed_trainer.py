"""The Trainer fits a DistributedDataParallel model on each rank's share of the data."""

import pathlib

import numpy as np

import lamina
import lamina.distributed as dist
from lamina import nn, optim
from lamina.data import ArrayDataset, DataLoader
from lamina.train import Trainer


def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((16, 4)), rng.standard_normal((16, 1))


def model():
    lamina.manual_seed(0)
    net = nn.Sequential(nn.Dense(5), nn.Tanh(), nn.Dense(1))
    net.build((None, 4))
    return net.double()


def one_process_weights():
    net = model()
    trainer = Trainer(net, loss="mse", optimizer=optim.SGD(net, lr=0.1), metrics=(), verbose=0)
    trainer.fit(DataLoader(ArrayDataset(*data()), batch_size=8, shuffle=False), epochs=2)
    return [p.data.copy() for p in net.parameters()]


def _fit(rank, expected, folder):
    wrapped = dist.DistributedDataParallel(model())
    trainer = Trainer(wrapped, loss="mse", optimizer=optim.SGD(wrapped, lr=0.1), metrics=())
    assert trainer.callbacks[0].verbose == (1 if rank == 0 else 0)       # only rank 0 shows progress
    sampler = dist.DistributedSampler(ArrayDataset(*data()), shuffle=False)
    trainer.fit(DataLoader(ArrayDataset(*data()), batch_size=4, sampler=sampler), epochs=2)
    assert sampler.epoch == 1                                           # set by the trainer every epoch
    for p, e in zip(wrapped.module.parameters(), expected, strict=True):
        np.testing.assert_allclose(p.data, e, rtol=0, atol=1e-12)
    trainer.save_checkpoint(f"{folder}/rank{rank}.ckpt")
    dist.barrier()
    assert sorted(p.name for p in pathlib.Path(folder).iterdir()) == ["rank0.ckpt"]


def test_fit_on_two_ranks_equals_one_process_on_whole_batches(run_ranks, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    run_ranks(_fit, 2, one_process_weights(), str(folder))


def test_readme_example_trains_on_two_ranks_and_loads_as_the_plain_model():
    from test_readme import run_section

    names = run_section("### Data-parallel training over processes")
    assert type(names["model"]).__name__ == "Sequential"
    assert names["accuracy"] > 0.9
