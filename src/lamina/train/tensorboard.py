"""TensorBoard logging without TensorFlow: event files written with the standard library and NumPy.

An event file is a sequence of TFRecords, each holding one serialized ``Event`` protobuf.
A record is framed as

    length (uint64, little-endian) | masked_crc(length bytes) | payload | masked_crc(payload)

where crc is CRC32C (Castagnoli: the reflected polynomial 0x82F63B78, initial value and final
xor 0xFFFFFFFF) and the mask rotates it right by 15 bits and adds 0xA282EAD8, modulo 2^32, so
that a CRC stored next to the data it covers is not itself a valid CRC of that data.

The payloads are encoded here by hand, with only the protobuf wire types these messages need
(varint, 64-bit, length-delimited, 32-bit; a field's key is the varint ``number << 3 | type``):

    Event          {double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;}
    Summary        {repeated Value value = 1;}
    Summary.Value  {string tag = 1; float simple_value = 2; HistogramProto histo = 5;}
    HistogramProto {double min = 1; double max = 2; double num = 3; double sum = 4; double sum_squares = 5;
                    repeated double bucket_limit = 6 [packed]; repeated double bucket = 7 [packed];}

The first record of a file is an Event whose ``file_version`` is ``"brain.Event:2"``: with it,
TensorBoard takes steps that go back (batch and epoch steps interleaved) as they are, instead of
discarding what it read as data orphaned by a restart.

:class:`SummaryWriter` writes scalars and histograms to one file (the method names are those
of ``torch.utils.tensorboard.SummaryWriter``); :class:`TensorBoard` is the fit-loop callback,
with the run layout of ``keras.callbacks.TensorBoard``.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable

import numpy as np

from lamina.train.callbacks import Callback, main_process_only

FILE_VERSION = "brain.Event:2"
CRC32C_POLYNOMIAL = 0x82F63B78
"""The Castagnoli polynomial, bit-reversed (the CRC shifts right, least significant bit first)."""
CRC_MASK_DELTA = 0xA282EAD8

_UINT32 = 0xFFFFFFFF
_UINT64 = (1 << 64) - 1
_INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH_DELIMITED, _WIRE_FIXED32 = 0, 1, 2, 5
_file_counter = itertools.count()


# -- CRC32C and the TFRecord framing ------------------------------------------------------------------------------
def _crc32c_table() -> tuple[int, ...]:
    """The CRC of every byte value, shifted through the register eight bits at a time."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, one table look-up per byte; ``crc32c(b"123456789") == 0xE3069283``."""
    crc = _UINT32
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _UINT32


def masked_crc32c(data: bytes) -> int:
    """The CRC as a TFRecord stores it: ``((crc >> 15) | (crc << 17)) + 0xA282EAD8`` modulo 2^32."""
    crc = crc32c(data)
    rotated = ((crc >> 15) | (crc << 17)) & _UINT32
    return (rotated + CRC_MASK_DELTA) & _UINT32


def tfrecord(payload: bytes) -> bytes:
    """``payload`` framed as one TFRecord: its length, the length's masked CRC, itself, its masked CRC."""
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


# -- protobuf encoding ----------------------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    """Base-128 varint, low group first; a negative int64 is written as its 64-bit two's complement."""
    value &= _UINT64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int64_field(field: int, value: int) -> bytes:
    return _key(field, _WIRE_VARINT) + _varint(value)


def _double_field(field: int, value: float) -> bytes:
    return _key(field, _WIRE_FIXED64) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
    with np.errstate(over="ignore"):  # beyond float32's range is written as infinity, as a C cast does
        return _key(field, _WIRE_FIXED32) + np.array(value, dtype="<f4").tobytes()


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, _WIRE_LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _packed_doubles_field(field: int, values: np.ndarray) -> bytes:
    return _bytes_field(field, np.asarray(values, dtype="<f8").tobytes())


def encode_event(wall_time: float, step: int, file_version: str | None = None, summary: bytes | None = None) -> bytes:
    """A serialized ``Event``; ``summary`` is a serialized ``Summary`` (see :func:`encode_summary`)."""
    event = _double_field(1, wall_time) + _int64_field(2, step)
    if file_version is not None:
        event += _bytes_field(3, file_version.encode())
    if summary is not None:
        event += _bytes_field(5, summary)
    return event


def encode_summary(values: Iterable[bytes]) -> bytes:
    """A serialized ``Summary`` of serialized ``Summary.Value`` messages."""
    return b"".join(_bytes_field(1, value) for value in values)


def encode_scalar_value(tag: str, value: float) -> bytes:
    """A serialized ``Summary.Value`` holding a scalar (a float32 ``simple_value``)."""
    return _bytes_field(1, tag.encode()) + _float_field(2, value)


def encode_histogram_value(tag: str, values: np.ndarray, bins: int) -> bytes:
    """A serialized ``Summary.Value`` holding the ``HistogramProto`` of ``values`` (finite, not empty).

    The buckets are those of ``np.histogram(values, bins)``, in the values' own dtype:
    ``bucket_limit`` holds the right edges of the bins, ``bucket`` their counts; min, max, num,
    sum and sum_squares (sum of x^2) are taken over all the values in float64.
    """
    counts, edges = np.histogram(values, bins=bins)
    values = np.asarray(values, dtype=np.float64).ravel()
    histogram = (_double_field(1, float(values.min())) + _double_field(2, float(values.max()))
                 + _double_field(3, float(values.size)) + _double_field(4, float(values.sum()))
                 + _double_field(5, float(np.dot(values, values)))
                 + _packed_doubles_field(6, edges[1:]) + _packed_doubles_field(7, counts))
    return _bytes_field(1, tag.encode()) + _bytes_field(5, histogram)


# -- argument checks ------------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_tag(where: str, tag) -> str:
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"{where}: tag must be a non-empty string, got {tag!r}")
    return tag


def _check_step(where: str, step) -> int:
    if not _is_int(step) or not _INT64_RANGE[0] <= int(step) <= _INT64_RANGE[1]:
        raise ValueError(f"{where}: step must be an integer that fits in int64, got {step!r}")
    return int(step)


def _check_walltime(where: str, walltime) -> float:
    if walltime is None:
        return time.time()
    if not isinstance(walltime, (int, float, np.integer, np.floating)) or isinstance(walltime, bool) \
            or not np.isfinite(walltime):
        raise ValueError(f"{where}: walltime must be a finite number of seconds since the epoch or None, "
                         f"got {walltime!r}")
    return float(walltime)


def _real_array(where: str, name: str, value) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where}: {name} must be real numbers, got {type(value).__name__} of dtype {array.dtype}")
    return array


# -- writing ------------------------------------------------------------------------------------------------------
def event_file_name() -> str:
    """``events.out.tfevents.<seconds>.<host>.<pid>.<n>``: TensorFlow's name, with the process id and a
    per-process counter so that two writers opened in the same second never share a file."""
    return f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"


class SummaryWriter:
    """Scalars and histograms written to a new event file in ``log_dir`` (created if missing).

    The file is opened at construction, its first record being the ``file_version`` event, and
    stays open until :meth:`close`; records are buffered and reach the disk at :meth:`flush`
    and :meth:`close`. An event file is an append-only log that TensorBoard reads while it
    grows, so it is written in place, not atomically (a crash loses at most the unflushed
    records). Use it as a context manager to close it::

        with SummaryWriter("logs/run1") as writer:
            writer.add_scalar("loss", 0.25, step=10)
    """

    def __init__(self, log_dir: str | os.PathLike):
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"SummaryWriter: log_dir must be a path, got {log_dir!r}")
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self.path = os.path.join(self.log_dir, event_file_name())
        self._file = open(self.path, "xb")
        self._write(encode_event(time.time(), 0, file_version=FILE_VERSION))

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _write(self, event: bytes) -> None:
        if self._file.closed:
            raise ValueError(f"SummaryWriter: {self.path} is closed; open a new writer to write more")
        self._file.write(tfrecord(event))

    def _write_summary(self, value: bytes, step: int, walltime: float) -> None:
        self._write(encode_event(walltime, step, summary=encode_summary([value])))

    def add_scalar(self, tag: str, value: float, step: int, walltime: float | None = None) -> None:
        """Record ``value`` (stored as float32) under ``tag`` at ``step``; ``walltime`` defaults to now."""
        where = "SummaryWriter.add_scalar"
        array = _real_array(where, "value", value)
        if array.size != 1:
            raise ValueError(f"{where}: value must be one number, got an array of shape {array.shape}")
        self._write_summary(encode_scalar_value(_check_tag(where, tag), float(array.item())),
                            _check_step(where, step), _check_walltime(where, walltime))

    def add_histogram(self, tag: str, values, step: int, bins: int = 30, walltime: float | None = None) -> None:
        """Record the histogram of ``values`` (any shape, finite, not empty) in ``bins`` equal-width
        bins between their min and max (``np.histogram``) under ``tag`` at ``step``."""
        where = "SummaryWriter.add_histogram"
        array = _real_array(where, "values", values)
        if array.size == 0:
            raise ValueError(f"{where}: values of {tag!r} are empty; a histogram needs at least one value")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: values of {tag!r} contain {int(np.sum(~np.isfinite(array)))} NaN or "
                             f"infinite entries; a histogram needs finite values")
        if not _is_int(bins) or bins < 1:
            raise ValueError(f"{where}: bins must be a positive integer, got {bins!r}")
        self._write_summary(encode_histogram_value(_check_tag(where, tag), array, int(bins)),
                            _check_step(where, step), _check_walltime(where, walltime))

    def flush(self) -> None:
        """Push the buffered records to the file."""
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (closing twice does nothing)."""
        self._file.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class TensorBoard(Callback):
    """Log the training to TensorBoard (``tensorboard --logdir logs``), in the layout of Keras's callback.

    At the end of each epoch, the training logs (loss, each metric, samples per second) go to
    the run ``log_dir/train`` as ``epoch_<name>`` and the validation logs (``val_<name>``) to the
    run ``log_dir/validation`` as ``epoch_<name>``, so that TensorBoard draws the training and
    validation curves of a quantity in one chart; the step is the epoch index (0, 1, ...). The
    optimizer's ``lr``, if it has one, is written to the training run as ``epoch_learning_rate``:
    the value at the end of the epoch, after an epoch schedule has stepped. Both files are
    flushed after each epoch and closed at the end of training, or when ``fit`` is left by an
    exception (a new fit opens new files).

    ``update_freq``: ``"epoch"``, ``"batch"`` or a positive integer n. With ``"batch"`` (n = 1)
    or n, the loss and metrics of every n-th mini-batch are also written to the training run as
    ``batch_<name>``, at step = the trainer's iteration count (1, 2, ...).

    ``histogram_freq``: with k > 0, a histogram of every parameter (tagged with its dotted name
    from ``model.named_parameters()``) is written to the training run at the end of epochs
    0, k, 2k, ...; 0 writes none.
    """

    def __init__(self, log_dir: str | os.PathLike = "logs", histogram_freq: int = 0,
                 update_freq: str | int = "epoch"):
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"TensorBoard: log_dir must be a path, got {log_dir!r}")
        if not _is_int(histogram_freq) or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be a non-negative integer (epochs between "
                             f"histograms, 0 for none), got {histogram_freq!r}")
        if update_freq == "batch":
            update_freq = 1
        elif update_freq != "epoch" and (not _is_int(update_freq) or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a positive integer "
                             f"(mini-batches between writes), got {update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq)
        self.update_freq = update_freq if update_freq == "epoch" else int(update_freq)
        self._writers: dict[str, SummaryWriter] = {}

    def writer(self, run: str) -> SummaryWriter:
        """The writer of ``log_dir/<run>`` (``"train"`` or ``"validation"``), opened at its first use."""
        if run not in self._writers:
            self._writers[run] = SummaryWriter(os.path.join(self.log_dir, run))
        return self._writers[run]

    @main_process_only
    def on_batch_end(self, iteration: int, logs: dict) -> None:
        if self.update_freq == "epoch" or iteration % self.update_freq:
            return
        writer = self.writer("train")
        for name, value in logs.items():
            if name != "batch_size":
                writer.add_scalar(f"batch_{name}", value, iteration)

    @main_process_only
    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        train = self.writer("train")
        for name, value in logs.items():
            if name.startswith("val_"):
                self.writer("validation").add_scalar(f"epoch_{name[len('val_'):]}", value, epoch)
            else:
                train.add_scalar(f"epoch_{name}", value, epoch)
        lr = getattr(self.trainer.optimizer, "lr", None)
        if lr is not None:
            train.add_scalar("epoch_learning_rate", lr, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            for name, parameter in self.trainer.model.named_parameters():
                train.add_histogram(name, parameter.numpy(), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def on_exception(self, error: BaseException) -> None:
        self.on_train_end({})
