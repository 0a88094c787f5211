"""Pipeline parallelism (GPipe): the model cut into stages, rank r running stage r.

A batch is split into M micro-batches. Stage r takes a micro-batch's activations from rank
r - 1 (rank 0 reads the inputs), runs its layers and sends its output to rank r + 1; the last
stage computes the loss of the micro-batch divided by M. Backward runs the other way: stage r
receives dJ/d(output) from rank r + 1, back-propagates it through its layers (its parameters'
gradients add up over the micro-batches) and sends dJ/d(input) to rank r - 1. With a mean loss
and equal micro-batches the accumulated gradients equal those of the whole batch,
(1 / M) sum_m dJ_m/dw.

Schedules: ``"gpipe"`` runs every forward, then every backward (M sets of activations kept);
``"1f1b"`` (PipeDream-Flush) runs R - r - 1 forwards to fill the pipeline, then alternates one
forward and one backward, so stage r keeps at most R - r micro-batches' activations.
Activations and gradients travel by :func:`~lamina.distributed.send` and
:func:`~lamina.distributed.recv_array` between neighbours only. With ``process_group`` (or
``group``), a subgroup from :func:`~lamina.distributed.new_group`, stage r runs on the group's
rank r (the pipeline group of a 2-D mesh, other pipelines training beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lamina.autograd import Tensor, no_grad
from lamina.distributed.collectives import recv_array, send
from lamina.distributed.group import pick_group, resolve_group
from lamina.nn.module import Module

__all__ = ["Pipeline"]

SCHEDULES = ("gpipe", "1f1b")


class Pipeline:
    """Run ``stages[rank]`` of a model cut into ``world_size`` stages over ``micro_batches``
    micro-batches; see the module's text. Every rank builds the same list (or passes None for
    the stages it does not run) and calls :meth:`train_step` together."""

    def __init__(self, stages: Sequence[Module | None], micro_batches: int, process_group: Any = None,
                 schedule: str = "gpipe", group: Any = None) -> None:
        group = resolve_group(pick_group(process_group, group, "Pipeline"), "Pipeline")
        if len(stages) != group.world_size:
            raise ValueError(f"Pipeline: {len(stages)} stages for world_size = {group.world_size} ranks; rank r runs "
                             "stage r, so give one stage per rank")
        if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"Pipeline: micro_batches must be a positive integer; got {micro_batches!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"Pipeline: unknown schedule {schedule!r}; expected one of {SCHEDULES}")
        if not isinstance(stages[group.rank], Module):
            raise TypeError(f"Pipeline: stage {group.rank} (run by this rank) must be a lamina.nn.Module; got "
                            f"{type(stages[group.rank]).__name__}")
        self.stage = stages[group.rank]
        self.micro_batches, self.schedule = micro_batches, schedule
        self.rank, self.world_size = group.rank, group.world_size
        self.is_first, self.is_last = group.rank == 0, group.rank == group.world_size - 1
        self.group = group
        self._before = None if self.is_first else group.global_rank(group.rank - 1)
        self._after = None if self.is_last else group.global_rank(group.rank + 1)
        self.max_in_flight = 0          # the most micro-batches whose activations were kept at once

    def parameters(self) -> list[Tensor]:
        """This rank's stage's parameters (what its optimizer steps)."""
        return self.stage.parameters()

    def train_step(self, inputs: Any = None, targets: Any = None,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> float | None:
        """One forward and backward pass of the batch: ``inputs`` are read on rank 0,
        ``targets`` and ``loss_fn(output, target)`` (a mean loss) on the last rank. The stage's
        parameters' gradients are added to (zero them first). Returns the batch's loss (the mean
        of the micro-batches') on the last rank, None on the others."""
        chunks = self._split(inputs, "inputs") if self.is_first else [None] * self.micro_batches
        labels = self._split(targets, "targets") if self.is_last else [None] * self.micro_batches
        if self.is_last and loss_fn is None:
            raise ValueError("Pipeline.train_step: the last rank computes the loss; pass loss_fn(output, target)")
        in_flight: list[tuple[Tensor | None, Tensor]] = []
        total = 0.0
        warmup = self.micro_batches if self.schedule == "gpipe" else min(self.world_size - self.rank - 1,
                                                                          self.micro_batches)
        for m in range(self.micro_batches):
            in_flight.append(self._forward(chunks[m], labels[m], loss_fn))
            self.max_in_flight = max(self.max_in_flight, len(in_flight))
            if self.is_last:
                total += float(in_flight[-1][1].item())
            if m >= warmup:
                self._backward(*in_flight.pop(0))
        while in_flight:
            self._backward(*in_flight.pop(0))
        return total if self.is_last else None

    def predict(self, inputs: Any = None) -> np.ndarray | None:
        """The model's output for ``inputs`` (read on rank 0), micro-batch by micro-batch without
        gradients: the whole batch's output on the last rank, None on the others."""
        chunks = self._split(inputs, "inputs") if self.is_first else [None] * self.micro_batches
        outputs = []
        with no_grad():
            for chunk in chunks:
                if self.is_first:
                    y = self.stage(chunk)
                else:
                    received = recv_array(self._before, group=self.group)
                    y = self.stage(Tensor(received, dtype=received.dtype))
                if self.is_last:
                    outputs.append(y.data)
                else:
                    send(y.data, self._after, group=self.group)
        return np.concatenate(outputs) if self.is_last else None

    def _forward(self, inputs: Any, labels: Any, loss_fn: Callable | None) -> tuple[Tensor | None, Tensor]:
        if self.is_first:
            x = None
            y = self.stage(inputs)
        else:
            received = recv_array(self._before, group=self.group)
            x = Tensor(received, requires_grad=True, dtype=received.dtype)
            y = self.stage(x)
        if self.is_last:
            return x, loss_fn(y, labels) / self.micro_batches
        send(y.data, self._after, group=self.group)
        return x, y

    def _backward(self, x: Tensor | None, y: Tensor) -> None:
        if self.is_last:
            y.backward()
        else:
            y.backward(recv_array(self._after, group=self.group))
        if not self.is_first:
            send(x.grad if x.grad is not None else np.zeros(x.shape, x.dtype), self._before, group=self.group)

    def _split(self, batch: Any, what: str) -> list[Any]:
        array = batch.data if isinstance(batch, Tensor) else batch
        if array is None:
            raise ValueError(f"Pipeline.train_step: rank {self.rank} needs the {what}")
        if len(array) % self.micro_batches:
            raise ValueError(f"Pipeline.train_step: a batch of {len(array)} {what} does not split into "
                             f"{self.micro_batches} equal micro-batches (needed for the gradients to equal the "
                             "whole batch's)")
        size = len(array) // self.micro_batches
        chunks = [array[m * size:(m + 1) * size] for m in range(self.micro_batches)]
        if what == "inputs" and isinstance(array, np.ndarray):
            return [Tensor(chunk, dtype=chunk.dtype) for chunk in chunks]
        return chunks
