"""A stop asked for inside an epoch on one rank stops every rank after the same batch."""

import numpy as np

import lamina
import lamina.distributed as dist
from lamina import nn, optim
from lamina.data import ArrayDataset, DataLoader
from lamina.train import Callback, TerminateOnNaN, Trainer
from lamina.train.rank_logs import any_rank_stops

BATCHES = 6     # per rank and epoch; every stop below comes before the end of the first epoch


def model():
    lamina.manual_seed(2)
    net = nn.Sequential(nn.Dense(5), nn.Tanh(), nn.Dense(1))
    net.build((None, 3))
    return net.double()


def shard(rank, nan_at=None):
    """Rank ``rank``'s own data, BATCHES batches of 2; a NaN in the label of sample ``nan_at`` if
    given (the Trainer refuses inputs that are not finite, and the mean squared error lets it through)."""
    rng = np.random.default_rng(10 + rank)
    x, y = rng.standard_normal((2 * BATCHES, 3)), rng.standard_normal((2 * BATCHES, 1))
    if nan_at is not None:
        y[nan_at, 0] = np.nan
    return DataLoader(ArrayDataset(x, y), batch_size=2, shuffle=False)


def fit(rank, data, callbacks):
    wrapped = dist.DistributedDataParallel(model())
    trainer = Trainer(wrapped, loss="mse", optimizer=optim.SGD(wrapped, lr=0.1), metrics=(), callbacks=callbacks,
                      verbose=0)
    trainer.fit(data, epochs=3)
    return trainer


def gathered(values):
    copies = [np.zeros_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, values)
    return copies


class StopOnRankOne(Callback):
    def __init__(self, rank, at):
        self.rank, self.at = rank, at

    def on_batch_end(self, iteration, logs):
        if self.rank == 1 and iteration == self.at:
            self.trainer.stop_training = True


def _stop_on_one_rank(rank):
    trainer = fit(rank, shard(rank), [StopOnRankOne(rank, at=3)])
    assert (trainer.steps, trainer.iteration, trainer.history.epochs) == (3, 3, [1]), f"rank {rank}"
    assert trainer.stop_training
    weights = np.concatenate([p.data.ravel() for p in trainer.model.module.parameters()])
    mine, other = gathered(weights)
    np.testing.assert_array_equal(mine, other)


def test_a_callback_stopping_rank_one_at_batch_three_stops_both_ranks_there(run_ranks):
    run_ranks(_stop_on_one_rank, 2)


def _nan_on_one_rank(rank):
    terminate = TerminateOnNaN()
    trainer = fit(rank, shard(rank, nan_at=5 if rank == 0 else None), [terminate])
    assert (trainer.steps, trainer.history.epochs) == (3, [1]), f"rank {rank}"
    assert (terminate.message is not None) == (rank == 0)     # only rank 0 saw the NaN itself
    assert np.isfinite(trainer.history.iteration["loss"][:2]).all()
    assert np.isnan(trainer.history["loss"][0])               # the epoch's loss over both ranks


def test_terminate_on_nan_on_one_rank_stops_both_ranks(run_ranks):
    run_ranks(_nan_on_one_rank, 2)


def _agree(rank):
    assert [any_rank_stops(rank == 1), any_rank_stops(False), any_rank_stops(True)] == [True, False, True]


def test_any_rank_stops_is_true_on_every_rank_when_one_asks(run_ranks):
    run_ranks(_agree, 2)
