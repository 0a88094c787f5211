"""A distributed Trainer logs the loss and metrics of the whole data, and writes files on rank 0 only."""

import pathlib

import numpy as np

import lamina
import lamina.distributed as dist
from lamina import nn, optim
from lamina.data import ArrayDataset, DataLoader
from lamina.train import CSVLogger, EarlyStopping, ModelCheckpoint, Trainer

EPOCHS = 3


def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4))
    return x, np.eye(3)[rng.integers(0, 3, 16)]


def model():
    lamina.manual_seed(1)
    net = nn.Sequential(nn.Dense(6), nn.Tanh(), nn.Dense(3), nn.Softmax())
    net.build((None, 4))
    return net.double()


def trainer_of(net, callbacks=()):
    return Trainer(net, optimizer=optim.SGD(net, lr=0.5), metrics=("accuracy",), callbacks=callbacks, verbose=0)


def one_process_history():
    trainer = trainer_of(model())
    trainer.fit(DataLoader(ArrayDataset(*data()), batch_size=8, shuffle=False), epochs=EPOCHS)
    return trainer.history


def sharded_loader():
    dataset = ArrayDataset(*data())
    return DataLoader(dataset, batch_size=4, sampler=dist.DistributedSampler(dataset, shuffle=False))


def _logs_match(rank, expected):
    trainer = trainer_of(dist.DistributedDataParallel(model()))
    trainer.fit(sharded_loader(), epochs=EPOCHS)
    for name in ("loss", "accuracy"):
        got, want = trainer.history[name], expected[name]
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0, err_msg=f"rank {rank}: {name}")


def test_logged_loss_and_accuracy_of_two_ranks_equal_one_process_on_the_whole_data(run_ranks):
    expected = one_process_history()
    assert len(set(expected["accuracy"])) > 1        # the accuracy changes: a real comparison
    run_ranks(_logs_match, 2, expected)


def _write_files(rank, folder):
    callbacks = [ModelCheckpoint(f"{folder}/weights-{{epoch}}.ckpt", monitor="loss"),
                 CSVLogger(f"{folder}/log-rank{rank}.csv")]
    trainer_of(dist.DistributedDataParallel(model()), callbacks).fit(sharded_loader(), epochs=2)
    dist.barrier()
    names = sorted(p.name for p in pathlib.Path(folder).iterdir())
    assert names == ["log-rank0.csv", "weights-1.ckpt", "weights-2.ckpt"], f"rank {rank}: {names}"


def test_checkpoint_and_csv_logger_write_one_set_of_files_from_rank_0(run_ranks, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    run_ranks(_write_files, 2, str(folder))


def _stop_together(rank, expected):
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=0.02)
    trainer = trainer_of(dist.DistributedDataParallel(model()), [stopper])
    trainer.fit(sharded_loader(), epochs=40)
    decisions = [None, None]
    dist.all_gather_object(decisions, (stopper.stopped_epoch, stopper.best))
    assert decisions[0] == decisions[1], f"rank {rank}: the ranks decided apart: {decisions}"
    assert decisions[0][0] == expected[0], f"rank {rank}: stopped at {decisions[0][0]}, one process at {expected[0]}"
    np.testing.assert_allclose(decisions[0][1], expected[1], rtol=1e-13, atol=0)


def test_early_stopping_stops_both_ranks_at_the_epoch_of_one_process(run_ranks):
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=0.02)
    trainer_of(model(), [stopper]).fit(DataLoader(ArrayDataset(*data()), batch_size=8, shuffle=False), epochs=40)
    assert 1 < stopper.stopped_epoch < 39
    run_ranks(_stop_together, 2, (stopper.stopped_epoch, stopper.best))
