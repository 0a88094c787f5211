"""An epoch's logs in a distributed run: the values of all ranks, not of one rank's shard.

Each rank trains on its own share of the data (a :class:`~lamina.distributed.DistributedSampler`),
so its epoch loss and metrics describe that share only. Weighting each rank's mean by the samples
it saw gives the mean over the whole data, as one process would log it:

    v = sum_r n_r v_r / sum_r n_r

for every logged mean (the loss, accuracy, ...); ``samples_per_s`` is summed (the throughput of
all ranks together). Every rank gets the same values, so decisions taken from them
(``EarlyStopping``, ``ReduceLROnPlateau``, a plateau schedule) agree across ranks.

A stop decided inside an epoch by one rank only (``TerminateOnNaN`` seeing a NaN on its shard)
is shared the same way (:func:`any_rank_stops`), so that no rank is left waiting for the others
in the next collective.
"""

from __future__ import annotations

import numpy as np

from lamina.distributed import DistributedDataParallel, ReduceOp, all_reduce, is_initialized

THROUGHPUT = "samples_per_s"


def trains_over_ranks(model) -> bool:
    """Whether ``model`` is a :class:`~lamina.distributed.DistributedDataParallel` trained in a
    process group (the only case whose logs are reduced across ranks)."""
    return is_initialized() and isinstance(model, DistributedDataParallel)


def reduce_over_ranks(logs: dict, samples: int) -> dict:
    """This rank's epoch ``logs`` (means over its ``samples`` samples) as the logs of all ranks:
    each mean weighted by the ranks' sample counts, ``samples_per_s`` summed. A collective
    call: every rank of the group must make it with logs of the same names."""
    names = [name for name in logs if name != THROUGHPUT]
    sums = [float(logs[name]) * samples if samples else 0.0 for name in names]
    totals = np.array([float(samples), *sums, float(logs.get(THROUGHPUT, 0.0))], dtype=np.float64)
    all_reduce(totals)
    seen = totals[0]
    reduced = {name: float(total / seen) if seen else float("nan") for name, total in zip(names, totals[1:-1],
                                                                                          strict=True)}
    if THROUGHPUT in logs:
        reduced[THROUGHPUT] = float(totals[-1])
    return reduced


def any_rank_stops(stop: bool) -> bool:
    """Whether any rank asks to stop: the maximum over the ranks of ``stop`` as 0 or 1, the same
    answer on every rank. A collective call: every rank of the group must make it."""
    flag = np.array([int(bool(stop))], dtype=np.int64)
    all_reduce(flag, ReduceOp.MAX)
    return bool(flag[0])
