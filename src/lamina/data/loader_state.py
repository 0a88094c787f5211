"""The resumable state of :class:`lamina.data.DataLoader`: :meth:`~_ResumableState.state_dict`
(epoch counter, generator state, position inside an epoch in progress, the batch transform's
state) and :meth:`~_ResumableState.load_state_dict`, which makes a fresh loader over the same
data continue with exactly the batches the original would have produced. :class:`_ResumableState`
is a base class of ``DataLoader``.
"""

from __future__ import annotations

import copy
from typing import Any

from lamina.data.processes import ProcessPool

__all__: list[str] = []


class _ResumableState:
    """:class:`lamina.data.DataLoader`'s ``state_dict`` and ``load_state_dict`` (module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        """The loader's resumable state: epoch counter, generator state, in-epoch position.

        Taken between epochs, it resumes at the start of the next epoch. Taken while an
        epoch is being iterated (its iterator alive, after handing out batch ``k``), a loader
        restored from it redraws the same permutation and continues with batch ``k + 1``.
        Taken after an epoch was abandoned (``break``, an exception, the iterator dropped),
        it resumes, as the loader itself does, with a whole new epoch. Over an
        iterable dataset, a restored loader reads the stream again from its start and skips
        the ``k + 1`` batches handed out, so it resumes exactly if the stream is the same.
        """
        state: dict[str, Any] = {
            "epoch": self._epoch,
            "num_samples": self._num_samples(),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "sampler": repr(self.sampler),
        }
        pending = self._in_progress if self._in_progress is not None else self._resume
        if pending is not None and (self._iterable or pending["position"] < len(self)):
            state["generator"] = copy.deepcopy(pending["pre_state"])
            state["position"] = pending["position"]
        else:
            if pending is not None:
                # Every batch of the epoch has been handed out; the loop just has not asked
                # for the next one yet. Count the epoch as finished.
                state["epoch"] = self._epoch + 1
            state["generator"] = copy.deepcopy(self._generator.bit_generator.state)
            state["position"] = 0
        state["batch_seed"] = self._batch_seed
        if hasattr(self.batch_transform, "state_dict"):
            # Taken now, after the batches already handed out were mixed: a restored loader
            # mixes the following batches with the same draws.
            state["batch_transform"] = self.batch_transform.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (of a loader over the same data).

        A saved ``batch_transform`` state is loaded into this loader's batch transform; a
        state without one leaves the batch transform as it is.
        """
        missing = {"epoch", "generator", "position"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: state lacks {sorted(missing)}")
        for key, mine in (("num_samples", self._num_samples()), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last),
                          ("sampler", repr(self.sampler))):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this loader has "
                    f"{key}={mine!r}"
                )
        generator_state = copy.deepcopy(state["generator"])
        if generator_state.get("bit_generator") != type(self._generator.bit_generator).__name__:
            raise ValueError(
                f"DataLoader.load_state_dict: saved generator is {generator_state.get('bit_generator')!r}, "
                f"expected {type(self._generator.bit_generator).__name__!r}"
            )
        if "batch_transform" in state:
            if not hasattr(self.batch_transform, "load_state_dict"):
                raise ValueError(
                    "DataLoader.load_state_dict: the state holds a batch_transform's state but this loader has "
                    f"batch_transform={self.batch_transform!r}, which has no load_state_dict"
                )
            self.batch_transform.load_state_dict(state["batch_transform"])
        if "batch_seed" in state:
            self._batch_seed = int(state["batch_seed"])
        with self._pool_lock:
            if isinstance(self._pool, ProcessPool) and not self._pool.busy:
                # Its processes hold a copy of the loader (and batch transform) from before.
                self._pool.close()
                self._pool = None
        self._epoch = int(state["epoch"])
        self._in_progress = None
        position = int(state["position"])
        if position > 0:
            self._resume = {"pre_state": generator_state, "position": position}
        else:
            self._resume = None
            self._generator.bit_generator.state = generator_state

    def _num_samples(self) -> int | None:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else None
