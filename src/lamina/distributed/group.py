"""The process group: this process's rank among ``world_size`` processes on one machine, and
the two channels the collectives use.

Control: rank 0 listens on a socket (a Unix socket named in a file for ``file://``, a TCP
port for ``tcp://`` and ``env://``) and every other rank connects to it, a star. A step of a
collective (:meth:`ProcessGroup.exchange`) has every rank send one small message to rank 0,
which answers each with the list of all of them: a barrier that also tells every rank what the
others passed (the shapes they called with, or the objects of ``all_gather_object``). A rank
that ends closes its socket, so the others learn of it at once instead of waiting forever.

Data: one block of shared memory mapped by every rank, a slot of ``slot_bytes`` per rank. A
collective copies its arrays through the slots a chunk at a time, the exchanges between the
copies ordering them (a write before an exchange is seen by every read after it). The block is
a file in ``/dev/shm`` removed as soon as every rank has mapped it, so nothing is left behind
when a process dies (``multiprocessing.shared_memory`` would register the block with a
resource tracker in every process that opens it, which on Python 3.11 warns about, or removes,
blocks other processes still use). Shared memory against pipes alone (``benchmarks/
distributed_speed.py``): a pipe copies an array through the kernel twice and a relay through
rank 0 twice more; the slots are written and read once each.

Point to point: every pair of ranks also shares a direct link (a Unix socket made when the
group starts), which ``send`` and ``recv`` use, so that messages between two ranks never mix
with the collectives' messages on the star. A thread per link writes the sends in order, so a
send returns at once even when the receiver is itself sending (two ranks exchanging large
arrays would otherwise each wait for the other to read). Every message on a link names its
channel (point to point, or one subgroup's control messages, see :mod:`lamina.distributed.
subgroup`); a message read while waiting for another channel is kept for its own reader.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import mmap
import multiprocessing.connection
import os
import queue
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lamina.io.atomic import write_bytes_atomic

__all__ = ["DistributedError", "GroupMember", "ProcessGroup", "destroy_process_group", "get_rank", "get_world_size",
           "init_process_group", "is_initialized", "is_main_process"]

BACKENDS = ("shm", "gloo")
"""Backend names accepted: "gloo" is taken as "shm", so that code written for PyTorch's CPU
backend runs unchanged."""
DEFAULT_SLOT_BYTES = 16 * 2**20
DEFAULT_TIMEOUT_S = 1800.0
TCP_AUTHKEY = b"lamina.distributed"
CONNECT_RETRY_S = 0.01
SEND_FLUSH_S = 5.0
"""How long closing the group waits for queued sends: a receiver has read every send it takes
before it reaches ``destroy_process_group``, so only sends nobody receives can still wait."""

_default_group: ProcessGroup | None = None


class DistributedError(RuntimeError):
    """Another rank went away (its process ended) or did not answer in time."""


class GroupMember:
    """``GroupMember.NON_GROUP_MEMBER``: what :func:`~lamina.distributed.new_group` returns on
    the ranks it leaves out, as ``torch.distributed``'s."""

    NON_GROUP_MEMBER: Any = None


class _NonGroupMember:
    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"


GroupMember.NON_GROUP_MEMBER = _NonGroupMember()


class ProcessGroup:
    """``world_size`` processes joined by :func:`init_process_group`; see the module's text."""

    fence_last_chunk = False
    """Whether a collective waits, after its last chunk, until every rank has read the slots:
    needed once subgroups exist, whose next collective may overwrite a slot another rank still reads."""

    def __init__(self, rank: int, world_size: int, links: list[Any], listener: Any, slot_bytes: int,
                 timeout: float) -> None:
        self.rank, self.world_size = rank, world_size
        self.slot_bytes, self.timeout = slot_bytes, timeout
        self._links, self._listener = links, listener
        self._peers: list[Any] = [None] * world_size
        self._senders: list[_Sender | None] = [None] * world_size
        self._block: mmap.mmap | None = None
        self._waiting: dict[tuple[int, Any], collections.deque] = {}    # read on a link, for another channel
        self.subgroups_made = 0
        self.rendezvous_file: Path | None = None      # rank 0 removes it when the group ends

    @property
    def ranks(self) -> list[int]:
        """The global ranks of the group, in group-rank order."""
        return list(range(self.world_size))

    def global_rank(self, group_rank: int) -> int:
        return group_rank

    def group_rank(self, global_rank: int) -> int | None:
        """The rank within this group of global rank ``global_rank`` (None for a non-member)."""
        return global_rank if 0 <= global_rank < self.world_size else None

    @property
    def base(self) -> ProcessGroup:
        """The default group, whose links and shared memory this group uses."""
        return self

    def __deepcopy__(self, memo: dict) -> ProcessGroup:
        return self                     # a handle on the processes, shared by copies of a model

    def slot(self, rank: int, dtype: np.dtype, count: int, offset: int = 0) -> np.ndarray:
        """``count`` items of ``dtype`` in rank ``rank``'s slot, starting ``offset`` items in."""
        start = rank * self.slot_bytes + offset * dtype.itemsize
        return np.frombuffer(self._block, dtype=dtype, count=count, offset=start)

    def items_per_slot(self, dtype: np.dtype) -> int:
        return self.slot_bytes // dtype.itemsize

    def exchange(self, item: Any, what: str = "barrier") -> list[Any]:
        """Every rank's ``item``, in rank order, on every rank; returns once all have called it."""
        if self.world_size == 1:
            return [item]
        if self.rank == 0:
            items = [item] + [self._receive(link, rank, what) for rank, link in enumerate(self._links) if rank]
            for rank, link in enumerate(self._links):
                if rank:
                    self._send(link, items, rank, what)
            return items
        self._send(self._links[0], item, 0, what)
        return self._receive(self._links[0], 0, what)

    def send_to(self, peer: int, item: Any, what: str = "send", channel: Any = "p2p") -> None:
        """Send ``item`` (pickled) to rank ``peer`` over the pair's own link, in the order of
        the calls, on ``channel``; returns once it is queued."""
        sender = self._senders[peer]
        if sender is None:
            sender = self._senders[peer] = _Sender(self._peers[peer])
        if sender.failure is not None:
            raise self._gone(peer, what) from sender.failure
        sender.items.put((channel, item))

    def receive_from(self, peer: int, what: str = "recv", channel: Any = "p2p") -> Any:
        """The next item rank ``peer`` sent to this rank on ``channel`` with :meth:`send_to`."""
        waiting = self._waiting.get((peer, channel))
        if waiting:
            return waiting.popleft()
        while True:
            arrived_on, item = self._receive(self._peers[peer], peer, what)
            if arrived_on == channel:
                return item
            self._waiting.setdefault((peer, arrived_on), collections.deque()).append(item)

    def _send(self, link: Any, item: Any, peer: int, what: str) -> None:
        try:
            link.send(item)
        except (BrokenPipeError, ConnectionResetError, EOFError) as error:
            raise self._gone(peer, what) from error

    def _receive(self, link: Any, peer: int, what: str) -> Any:
        try:
            if not link.poll(self.timeout):
                raise DistributedError(f"lamina.distributed.{what} on rank {self.rank}: rank {peer} did not answer "
                                       f"within {self.timeout:g} s (timeout given to init_process_group); is it "
                                       f"stuck, or calling a different collective?")
            return link.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError) as error:
            raise self._gone(peer, what) from error

    def _gone(self, peer: int, what: str) -> DistributedError:
        return DistributedError(f"lamina.distributed.{what} on rank {self.rank}: rank {peer} went away (its "
                                f"process ended, or it destroyed the process group); see that rank's error")

    def close(self) -> None:
        for sender in self._senders:
            if sender is not None:
                sender.finish(min(self.timeout, SEND_FLUSH_S))
        for link in self._links + self._peers:
            if link is not None:
                link.close()
        if self._listener is not None:
            self._listener.close()
        if self.rendezvous_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.rendezvous_file.unlink()
        if self._block is not None:
            with contextlib.suppress(BufferError):    # an array still viewing it keeps the mapping alive
                self._block.close()


class _Sender:
    """A thread writing the items put in ``items`` to ``link``, in order, until :meth:`finish`."""

    _DONE = object()

    def __init__(self, link: Any) -> None:
        self.link, self.items, self.failure = link, queue.Queue(), None
        self.thread = threading.Thread(target=self._run, name="lamina-distributed-send", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not self._DONE:
            try:
                self.link.send(item)
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as error:
                self.failure = error
                return

    def finish(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until everything queued is written."""
        self.items.put(self._DONE)
        self.thread.join(timeout)


# -- the default group --------------------------------------------------------------------

def init_process_group(backend: str = "shm", init_method: str | None = None, *, rank: int | None = None,
                       world_size: int | None = None, timeout: float | datetime.timedelta | None = None,
                       slot_bytes: int = DEFAULT_SLOT_BYTES) -> None:
    """Join this process to the default group as ``rank`` of ``world_size`` (every rank calls it).

    ``init_method``: ``"file:///path"`` (rank 0 writes its address and a random key to the file,
    which must not exist yet; the others read them), ``"tcp://127.0.0.1:PORT"``, or ``"env://"``
    (the default: ``MASTER_ADDR`` and ``MASTER_PORT``, and ``RANK`` and ``WORLD_SIZE`` when the
    arguments are left out). ``backend`` is ``"shm"`` (``"gloo"`` is accepted as its alias).
    ``timeout`` (seconds or a timedelta; 30 minutes by default) bounds every wait for another
    rank. Rank 0 removes the rendezvous file when the group ends, so the path can be used again.
    ``slot_bytes``: each rank's shared-memory slot; larger arrays go through it in chunks.
    """
    global _default_group
    if _default_group is not None:
        raise RuntimeError(f"init_process_group: this process is already rank {_default_group.rank} of "
                           f"{_default_group.world_size}; call destroy_process_group() first")
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected one of {BACKENDS} (shared "
                         "memory between processes of one machine)")
    init_method = init_method or "env://"
    if init_method.startswith("env://"):
        rank = int(_environment("RANK")) if rank is None else rank
        world_size = int(_environment("WORLD_SIZE")) if world_size is None else world_size
        init_method = f"tcp://{_environment('MASTER_ADDR')}:{_environment('MASTER_PORT')}"
    if rank is None or world_size is None:
        raise ValueError(f"init_process_group: rank and world_size are needed with init_method={init_method!r}; "
                         f"got rank={rank!r}, world_size={world_size!r}")
    _check_rank(rank, world_size)
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    timeout = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    if slot_bytes < 64 or slot_bytes % 64:
        raise ValueError(f"init_process_group: slot_bytes must be a positive multiple of 64; got {slot_bytes}")
    if world_size == 1:
        links, listener = [None], None
    elif rank == 0:
        links, listener = _accept(init_method, world_size, timeout)
    else:
        links, listener = [_connect(init_method, rank, world_size, timeout)] + [None] * (world_size - 1), None
    group = ProcessGroup(rank, world_size, links, listener, slot_bytes, timeout)
    if rank == 0 and world_size > 1 and init_method.startswith("file://"):
        group.rendezvous_file = Path(init_method.removeprefix("file://"))
    try:
        group._block = _shared_block(group, world_size * slot_bytes)
        _link_pairs(group)
    except BaseException:
        group.close()
        raise
    _default_group = group


def destroy_process_group(group: Any = None) -> None:
    """Leave the default group (once every rank has got here) and free its channels; given a
    subgroup, only forget it (on this rank: no communication), as ``torch.distributed``'s."""
    global _default_group
    if group is not None and group is not _default_group:
        if group is not GroupMember.NON_GROUP_MEMBER:
            resolve_group(group, "destroy_process_group").destroy()
        return
    group = _group("destroy_process_group")
    try:
        group.exchange("destroy_process_group", "destroy_process_group")
    finally:
        _default_group = None
        group.close()


def is_initialized() -> bool:
    return _default_group is not None


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (the default group when None); -1 on a rank that is
    not a member (given ``GroupMember.NON_GROUP_MEMBER``), as ``torch.distributed``'s."""
    if group is GroupMember.NON_GROUP_MEMBER:
        _group("get_rank")
        return -1
    return resolve_group(group, "get_rank").rank


def get_world_size(group: Any = None) -> int:
    """How many processes ``group`` (the default group when None) holds; -1 on a non-member."""
    if group is GroupMember.NON_GROUP_MEMBER:
        _group("get_world_size")
        return -1
    return resolve_group(group, "get_world_size").world_size


def is_main_process() -> bool:
    """True on rank 0 and in a program that is not distributed: the process that prints and
    writes files."""
    return _default_group is None or _default_group.rank == 0


def _group(where: str) -> ProcessGroup:
    if _default_group is None:
        raise RuntimeError(f"lamina.distributed.{where}: no process group; call "
                           "lamina.distributed.init_process_group(...) in every process first")
    return _default_group


def resolve_group(group: Any, where: str) -> Any:
    """The group a call named ``where`` works in: the default group for None, else ``group``
    (a subgroup this rank belongs to, still alive)."""
    default = _group(where)
    if group is None or group is default:
        return default
    if group is GroupMember.NON_GROUP_MEMBER:
        raise RuntimeError(f"lamina.distributed.{where}: rank {default.rank} is not a member of this group "
                           "(new_group returned GroupMember.NON_GROUP_MEMBER here); only the group's ranks call "
                           "its collectives")
    if getattr(group, "base", None) is not default:
        raise ValueError(f"lamina.distributed.{where}: group must be None, the default group or a group made by "
                         f"new_group since init_process_group; got {group!r}")
    if group.destroyed:
        raise RuntimeError(f"lamina.distributed.{where}: {group!r} was destroyed with destroy_process_group(group)")
    return group


def pick_group(process_group: Any, group: Any, where: str) -> Any:
    """The group given as ``process_group`` (PyTorch's keyword) or ``group``; one of them at most."""
    if process_group is not None and group is not None and process_group is not group:
        raise ValueError(f"{where}: pass the group as process_group or as group, not two different groups")
    return process_group if process_group is not None else group


def _check_rank(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"init_process_group: world_size must be a positive integer; got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank must be an integer in [0, world_size) = [0, {world_size}); "
                         f"got {rank!r}")


def _environment(name: str) -> str:
    if name not in os.environ:
        raise ValueError(f"init_process_group: init_method='env://' reads the environment variable {name}, which "
                         "is not set; set it, or pass init_method='file:///path' or 'tcp://127.0.0.1:PORT'")
    return os.environ[name]


# -- rendezvous ---------------------------------------------------------------------------

def _accept(init_method: str, world_size: int, timeout: float) -> tuple[list[Any], Any]:
    """Rank 0: listen, publish the address, take one connection from every other rank."""
    if init_method.startswith("file://"):
        path = Path(init_method.removeprefix("file://"))
        if path.exists() and path.stat().st_size:
            raise ValueError(f"init_process_group: the rendezvous file {path} already exists (left by an earlier "
                             "run?); remove it or name a new one")
        authkey = secrets.token_bytes(32)
        listener = multiprocessing.connection.Listener(family="AF_UNIX", authkey=authkey)
        write_bytes_atomic(path, json.dumps({"address": listener.address, "key": authkey.hex(),
                                             "world_size": world_size}).encode())
    elif init_method.startswith("tcp://"):
        host, port = _host_port(init_method)
        listener = multiprocessing.connection.Listener((host, port), authkey=TCP_AUTHKEY, backlog=world_size)
    else:
        raise ValueError(f"init_process_group: unknown init_method {init_method!r}; expected 'file:///path', "
                         "'tcp://HOST:PORT' or 'env://'")
    links: list[Any] = [None] * world_size
    listener._listener._socket.settimeout(timeout)
    try:
        for _ in range(world_size - 1):
            try:
                link = listener.accept()
            except TimeoutError as error:
                missing = [r for r in range(1, world_size) if links[r] is None]
                raise DistributedError(f"init_process_group: ranks {missing} did not join within {timeout:g} s") \
                    from error
            peer, peer_world = link.recv()
            if peer_world != world_size or not 0 < peer < world_size or links[peer] is not None:
                message = (f"init_process_group: rank {peer} joined with world_size={peer_world}, but rank 0 has "
                           f"world_size={world_size}" if peer_world != world_size
                           else f"init_process_group: two processes joined as rank {peer}")
                link.send(message)
                raise ValueError(message)
            links[peer] = link
        for link in links[1:]:
            link.send(None)                                      # everyone is here
    except BaseException:
        for link in links:
            if link is not None:
                link.close()
        listener.close()
        if init_method.startswith("file://"):
            Path(init_method.removeprefix("file://")).unlink(missing_ok=True)
        raise
    return links, listener


def _connect(init_method: str, rank: int, world_size: int, timeout: float) -> Any:
    """A rank above 0: find rank 0's address, connect (retrying while it starts), say who we are."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if init_method.startswith("file://"):
                published = json.loads(Path(init_method.removeprefix("file://")).read_text())
                link = multiprocessing.connection.Client(published["address"], family="AF_UNIX",
                                                         authkey=bytes.fromhex(published["key"]))
            elif init_method.startswith("tcp://"):
                link = multiprocessing.connection.Client(_host_port(init_method), authkey=TCP_AUTHKEY)
            else:
                raise ValueError(f"init_process_group: unknown init_method {init_method!r}; expected "
                                 "'file:///path', 'tcp://HOST:PORT' or 'env://'")
            break
        except (OSError, ValueError, KeyError, multiprocessing.AuthenticationError) as error:
            if isinstance(error, ValueError) and "init_method" in str(error):
                raise
            if time.monotonic() > deadline:
                raise DistributedError(f"init_process_group: rank {rank} could not reach rank 0 through "
                                       f"{init_method!r} within {timeout:g} s ({error})") from error
            time.sleep(CONNECT_RETRY_S)
    link.send((rank, world_size))
    try:
        refusal = link.recv()
    except EOFError as error:
        raise DistributedError(f"init_process_group: rank 0 went away while rank {rank} was joining; see its "
                               "error") from error
    if refusal is not None:
        raise ValueError(refusal)
    return link


def _link_pairs(group: ProcessGroup) -> None:
    """A direct link between every pair of ranks: each rank listens, rank j connects to every
    rank below it (in order) and then accepts the ranks above, so no rank waits on one that
    waits on it."""
    if group.world_size == 1:
        return
    authkey = secrets.token_bytes(32)
    listener = multiprocessing.connection.Listener(family="AF_UNIX", authkey=authkey)
    try:
        addresses = group.exchange((listener.address, authkey.hex()), "init_process_group")
        for lower in range(group.rank):
            address, key = addresses[lower]
            link = multiprocessing.connection.Client(address, family="AF_UNIX", authkey=bytes.fromhex(key))
            link.send(group.rank)
            group._peers[lower] = link
        listener._listener._socket.settimeout(group.timeout)
        for _ in range(group.rank + 1, group.world_size):
            link = listener.accept()
            group._peers[link.recv()] = link
    finally:
        listener.close()


def _host_port(init_method: str) -> tuple[str, int]:
    host, _, port = init_method.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"init_process_group: expected init_method 'tcp://HOST:PORT'; got {init_method!r}")
    return host, int(port)


def _shared_block(group: ProcessGroup, size: int) -> mmap.mmap:
    """Rank 0 makes a file of ``size`` bytes in shared memory, every rank maps it, rank 0
    removes the file (the mappings live on)."""
    if group.rank == 0:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        descriptor, path = tempfile.mkstemp(prefix="lamina-distributed-", dir=folder)
        try:
            os.ftruncate(descriptor, size)
            block = mmap.mmap(descriptor, size)
            group.exchange(path, "init_process_group")
            group.exchange(None, "init_process_group")          # every rank has mapped it
        finally:
            os.close(descriptor)
            os.unlink(path)
        return block
    path = group.exchange(None, "init_process_group")[0]
    descriptor = os.open(path, os.O_RDWR)
    try:
        block = mmap.mmap(descriptor, size)
    finally:
        os.close(descriptor)
    group.exchange(None, "init_process_group")
    return block
