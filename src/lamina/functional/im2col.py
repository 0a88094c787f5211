"""Window arithmetic shared by convolution and pooling on NHWC images.

Course notes, padding and stride: an input of height h padded by p on each side and
scanned by a window of size f with stride s gives (h + 2p - f) / s + 1 outputs (floor).
Windows are read without copying through strided views: the view of the padded input
``xpad`` for kernel offset (i, j) is ``xpad[:, i::s, j::s]`` cut to the output size, and
the whole patch tensor (N, h_out, w_out, f_h, f_w, C) is one strided view of it.
"""

from __future__ import annotations

from lamina import backend
from lamina.errors import ShapeError


def pair(value, name: str, op: str) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(_is_int(v) for v in value):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    if not _is_int(value):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(value), int(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iu"
    )


def conv_pads(padding, in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              op: str) -> tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right).

    ``'valid'``: none. ``'same'``: TF/Keras rule, out = ceil(in / s), the total padding
    max((out - 1) s + f - in, 0) split with the extra pixel at the bottom/right (for stride 1
    and any kernel size, out == in). An int p or a pair (p_h, p_w): symmetric. A pair of
    pairs ((top, bottom), (left, right)): each side's own (a causal convolution pads one
    side only).
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            pads = []
            for n, f, s in zip(in_hw, kernel, stride):
                out = -(-n // s)
                total = max((out - 1) * s + f - n, 0)
                pads += [total // 2, total - total // 2]
            return pads[0], pads[1], pads[2], pads[3]
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a pair of ints, got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(side, (tuple, list)) for side in padding)):
        sides = tuple(pair(side, "padding", op) for side in padding)
        if min(min(side) for side in sides) < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
        return sides[0][0], sides[0][1], sides[1][0], sides[1][1]
    ph, pw = pair(padding, "padding", op)
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return ph, ph, pw, pw


def gradient_pads(in_hw: tuple[int, int], kernel: tuple[int, int], out_hw: tuple[int, int],
                  pads: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The (top, bottom, left, right) padding of dJ/dv in dJ/dx = pad(dJ/dv) * rot180(w) for
    a stride-1 convolution: f - 1 - p before, and after what brings the result to the input
    size (a negative amount crops the outputs that only saw padding)."""
    (h, w), (fh, fw), (ho, wo) = in_hw, kernel, out_hw
    top, left = fh - 1 - pads[0], fw - 1 - pads[2]
    return top, h + fh - 1 - ho - top, left, w + fw - 1 - wo - left


def out_size(n: int, f: int, s: int, before: int, after: int) -> int:
    """Number of windows: floor((n + before + after - f) / s) + 1."""
    return (n + before + after - f) // s + 1


def pad_nhwc(x, pads: tuple[int, int, int, int], value: float = 0.0):
    """``x`` with (top, bottom, left, right) rows/columns of ``value`` around H and W; ``x``
    itself when there is nothing to pad. A negative amount crops."""
    pt, pb, pl, pr = pads
    if pt == pb == pl == pr == 0:
        return x
    xp = backend.xp
    n, h, w, c = x.shape
    hp, wp = h + pt + pb, w + pl + pr
    out = xp.empty((n, hp, wp, c), dtype=x.dtype)
    # source and destination ranges (negative pads crop the source)
    r0, r1 = max(pt, 0), min(hp, pt + h)
    c0, c1 = max(pl, 0), min(wp, pl + w)
    if value is not None:
        if r0 > 0:
            out[:, :r0] = value
        if r1 < hp:
            out[:, r1:] = value
        if c0 > 0:
            out[:, r0:r1, :c0] = value
        if c1 < wp:
            out[:, r0:r1, c1:] = value
    out[:, r0:r1, c0:c1] = x[:, r0 - pt:r1 - pt, c0 - pl:c1 - pl]
    return out


def offset_view(xpad, i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int]):
    """The (N, h_out, w_out, C) view of ``xpad`` read by kernel offset (i, j)."""
    (ho, wo), (sh, sw) = out_hw, stride
    return xpad[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]


def strides_of(a) -> tuple[int, ...]:
    """``a.strides``, except that a C-contiguous array's axes of length 1 get the strides of
    the C layout: NumPy lets such an axis carry any stride (a transposed copy keeps the old
    one), which a view built from them would step out of ``a`` with."""
    if not a.flags.c_contiguous:
        return a.strides
    strides, step = [], a.itemsize
    for n in reversed(a.shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def strided_view(a, shape: tuple[int, ...], strides: tuple[int, ...]):
    """A read-only view of ``a``'s memory with ``shape`` and ``strides`` (in bytes, from a's
    first value), as ``as_strided`` makes it. A C-contiguous NumPy array's view is built
    directly on its buffer: a few microseconds less than ``as_strided``, paid once per
    chunk of every convolution. The view must stay inside ``a``."""
    xp = backend.xp
    if type(a) is xp.ndarray and xp.__name__ == "numpy" and a.size and a.flags.c_contiguous:
        view = xp.ndarray(shape, a.dtype, a, 0, strides)
        view.flags.writeable = False
        return view
    if xp.__name__ != "numpy":   # CuPy's as_strided has no read-only views
        return xp.lib.stride_tricks.as_strided(a, shape, strides)
    return xp.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)


def patches(xpad, kernel: tuple[int, int], out_hw: tuple[int, int], stride: tuple[int, int]):
    """All windows as one (N, h_out, w_out, f_h, f_w, C) view of ``xpad`` (no copy)."""
    sn, s_h, s_w, s_c = strides_of(xpad)
    (fh, fw), (ho, wo), (sh, sw) = kernel, out_hw, stride
    return strided_view(xpad, (xpad.shape[0], ho, wo, fh, fw, xpad.shape[3]),
                        (sn, s_h * sh, s_w * sw, s_h, s_w, s_c))


def clipped(count: int, start: int, s: int, n: int) -> tuple[int, int, slice]:
    """Outputs o in [lo, hi) whose input index o * s + start lies in [0, n), and the input slice."""
    lo = max(0, -(start // s))
    hi = min(count, (n - 1 - start) // s + 1) if n - 1 - start >= 0 else 0
    if hi <= lo:
        return 0, 0, slice(0, 0)
    first = lo * s + start
    return lo, hi, slice(first, first + (hi - lo - 1) * s + 1, s)


def check_nhwc(shape: tuple[int, ...], op: str, what: str = "x") -> None:
    if len(shape) != 4:
        raise ShapeError(f"{op}: expected {what} of shape (N, H, W, C) (4-D, channels last), "
                         f"got shape {tuple(shape)} ({len(shape)}-D)")
