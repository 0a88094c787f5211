"""Time-series classification data in the UCR/UEA archive formats, and per-series scaling.

Two file formats hold the UCR and UEA archives:

* ``.tsv`` (UCR 2018 archive): one series a line, the class label first, then the values, all
  separated by tabs; missing values (and the padding of shorter series) are ``NaN``. One
  channel only.
* ``.ts`` (sktime / UEA): a header of ``@key value`` lines (``@problemName``, ``@univariate``,
  ``@equalLength``, ``@classLabel true 1 2 3`` ...), then ``@data`` and one case a line: the
  channels separated by ``:``, the values of a channel by commas, the class label last
  (``1.0,2.0,3.0:4.0,5.0,6.0:label``); ``?`` marks a missing value; ``#`` starts a comment.

Readers return ``(x, y)``: x of shape (N, L, C) (channels last, as every lamina sequence)
when all series have L steps, else a list of N arrays (L_i, C) (:func:`pad_series` makes them
equal); y an array of the label strings, as written in the file. Writers write atomically.

:func:`z_normalize` scales each series to mean 0 and standard deviation 1 per channel,
z = (x - mean_t x) / std_t x, as the UCR archive's series are.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from lamina.errors import ShapeError
from lamina.io.atomic import atomic_write

__all__ = ["pad_series", "read_ts", "read_ucr_tsv", "write_ts", "write_ucr_tsv", "z_normalize"]


def z_normalize(x: Any, eps: float = 1e-8) -> np.ndarray:
    """Every series scaled to mean 0 and standard deviation 1 over time, per channel:
    z = (x - mean_t x) / max(std_t x, eps). ``x``: (N, L) or (N, L, C); a constant series
    becomes zeros. NaNs (missing values) are ignored by the statistics and kept."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ShapeError(f"z_normalize: expected series of shape (N, L) or (N, L, C), got shape {x.shape}")
    mean = np.nanmean(x, axis=1, keepdims=True)
    std = np.nanstd(x, axis=1, keepdims=True)
    return (x - mean) / np.maximum(std, eps)


def pad_series(series: list, length: int | None = None, value: float = 0.0) -> np.ndarray:
    """Unequal-length series (a list of (L_i,) or (L_i, C) arrays) as one (N, length, C) array,
    each series followed by ``value`` up to ``length`` (default: the longest L_i)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in series]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    if not arrays or any(a.ndim != 2 for a in arrays):
        raise ShapeError("pad_series: expected a non-empty list of (L,) or (L, C) series, got shapes "
                         f"{[a.shape for a in arrays]}")
    channels = {a.shape[1] for a in arrays}
    if len(channels) != 1:
        raise ShapeError(f"pad_series: the series have different channel counts {sorted(channels)}")
    longest = max(a.shape[0] for a in arrays)
    length = longest if length is None else int(length)
    if length < longest:
        raise ShapeError(f"pad_series: length={length} is shorter than the longest series ({longest} steps)")
    out = np.full((len(arrays), length, channels.pop()), value, dtype=np.float64)
    for row, a in zip(out, arrays):
        row[:len(a)] = a
    return out


def _stack_if_equal(series: list[np.ndarray]):
    if len({s.shape for s in series}) == 1:
        return np.stack(series)
    return series


def _label_strings(y: Any, n: int, who: str) -> list[str]:
    labels = [str(v) for v in np.asarray(y).reshape(-1)]
    if len(labels) != n:
        raise ShapeError(f"{who}: got {n} series but {len(labels)} labels")
    if any(any(c in label for c in ":,\t\n ") for label in labels):
        raise ValueError(f"{who}: labels must not contain ':', ',', spaces, tabs or newlines")
    return labels


def _as_case_list(x: Any, who: str) -> list[np.ndarray]:
    """Series as a list of (L_i, C) float arrays, from (N, L), (N, L, C) or a list."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ShapeError(f"{who}: expected series of shape (N, L) or (N, L, C), got shape {x.shape}")
        return [np.asarray(s, dtype=np.float64) for s in x]
    cases = [np.asarray(s, dtype=np.float64) for s in x]
    return [s[:, None] if s.ndim == 1 else s for s in cases]


# -- UCR 2018 .tsv -------------------------------------------------------------------------------
def read_ucr_tsv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from a UCR 2018 ``.tsv`` file: x (N, L, 1) float64 (NaN where a value is missing
    or a shorter series was padded), y (N,) label strings."""
    labels, rows = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2:
                raise ValueError(f"read_ucr_tsv: {path}, line {number}: expected a label and at least one value "
                                 "separated by tabs")
            labels.append(fields[0])
            rows.append([float(v) for v in fields[1:]])
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"read_ucr_tsv: {path}: lines of different lengths {sorted({len(r) for r in rows})}; "
                         "the UCR format pads shorter series with NaN")
    return np.asarray(rows, dtype=np.float64)[:, :, None], np.asarray(labels)


def write_ucr_tsv(path: str | os.PathLike, x: Any, y: Any) -> None:
    """Write univariate series x ((N, L), (N, L, 1) or a list of unequal ones, padded with NaN)
    and labels y as a UCR 2018 ``.tsv`` file, atomically. Values keep their full float64
    precision (``repr``), so reading gives back the same numbers."""
    cases = _as_case_list(x, "write_ucr_tsv")
    if any(c.shape[1] != 1 for c in cases):
        raise ShapeError("write_ucr_tsv: the .tsv format holds one channel; got channel counts "
                         f"{sorted({c.shape[1] for c in cases})} (use write_ts for multivariate series)")
    padded = pad_series(cases, value=np.nan)[:, :, 0]
    labels = _label_strings(y, len(cases), "write_ucr_tsv")
    text = io.StringIO()
    for label, row in zip(labels, padded):
        text.write(label + "\t" + "\t".join(repr(float(v)) for v in row) + "\n")
    with atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))


# -- sktime / UEA .ts ----------------------------------------------------------------------------
def _parse_ts_value(token: str) -> float:
    token = token.strip()
    return np.nan if token in ("?", "") or token.lower() == "nan" else float(token)


def read_ts(path: str | os.PathLike) -> tuple[Any, np.ndarray]:
    """(x, y) from a ``.ts`` file: x (N, L, C) float64 when every case has L steps, else a
    list of (L_i, C) arrays; y (N,) label strings (empty strings when ``@classLabel false``).
    Missing values ``?`` read as NaN. Timestamped data (``@timeStamps true``) is refused."""
    header: dict[str, str] = {}
    cases, labels = [], []
    in_data = False
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise ValueError(f"read_ts: {path}, line {number}: expected an @key header line before @data, "
                                     f"got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                else:
                    header[key] = value.strip()
                continue
            has_labels = header.get("classlabel", "false").split(" ")[0].lower() == "true"
            if header.get("timestamps", "false").lower() == "true":
                raise ValueError(f"read_ts: {path}: timestamped series (@timeStamps true) are not supported")
            parts = line.split(":")
            if has_labels:
                if len(parts) < 2:
                    raise ValueError(f"read_ts: {path}, line {number}: expected channels and a class label "
                                     "separated by ':'")
                labels.append(parts[-1].strip())
                parts = parts[:-1]
            channels = [[_parse_ts_value(v) for v in p.split(",")] for p in parts]
            lengths = {len(c) for c in channels}
            if len(lengths) != 1:
                raise ValueError(f"read_ts: {path}, line {number}: the channels of one case have different "
                                 f"lengths {sorted(lengths)}")
            cases.append(np.asarray(channels, dtype=np.float64).T)
    if not in_data:
        raise ValueError(f"read_ts: {path}: no @data line")
    if len({c.shape[1] for c in cases}) > 1:
        raise ValueError(f"read_ts: {path}: cases with different channel counts {sorted({c.shape[1] for c in cases})}")
    y = np.asarray(labels) if labels else np.asarray([""] * len(cases))
    return _stack_if_equal(cases), y


def write_ts(path: str | os.PathLike, x: Any, y: Any = None, problem_name: str = "problem") -> None:
    """Write series x ((N, L), (N, L, C) or a list of (L_i, C) arrays) and labels y (or None)
    as a ``.ts`` file, atomically; NaN is written as ``?``. Values keep full float64 precision."""
    cases = _as_case_list(x, "write_ts")
    if not cases:
        raise ShapeError("write_ts: no series to write")
    channels = {c.shape[1] for c in cases}
    if len(channels) != 1:
        raise ShapeError(f"write_ts: the series have different channel counts {sorted(channels)}")
    c = channels.pop()
    lengths = {len(s) for s in cases}
    labels = None if y is None else _label_strings(y, len(cases), "write_ts")
    if " " in problem_name:
        raise ValueError(f"write_ts: problem_name must not contain spaces, got {problem_name!r}")
    text = io.StringIO()
    text.write(f"@problemName {problem_name}\n@timeStamps false\n")
    text.write(f"@missing {'true' if any(np.isnan(s).any() for s in cases) else 'false'}\n")
    text.write(f"@univariate {'true' if c == 1 else 'false'}\n@dimensions {c}\n")
    text.write(f"@equalLength {'true' if len(lengths) == 1 else 'false'}\n")
    if len(lengths) == 1:
        text.write(f"@seriesLength {lengths.pop()}\n")
    if labels is None:
        text.write("@classLabel false\n")
    else:
        text.write("@classLabel true " + " ".join(dict.fromkeys(sorted(labels))) + "\n")
    text.write("@data\n")
    for i, case in enumerate(cases):
        fields = [",".join("?" if np.isnan(v) else repr(float(v)) for v in case[:, k]) for k in range(c)]
        if labels is not None:
            fields.append(labels[i])
        text.write(":".join(fields) + "\n")
    with atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))
