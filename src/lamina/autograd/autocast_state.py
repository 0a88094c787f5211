"""Which dtype automatic mixed precision casts to in this thread (``None``: off).

:class:`lamina.amp.autocast` sets it; :meth:`lamina.autograd.Function.apply` reads it
only for ops whose class declares an ``autocast_policy``, so ops without one pay a
single class-attribute check.
"""

from __future__ import annotations

import threading


class _State(threading.local):
    dtype = None  # the lower-precision dtype while autocast is on, else None


state = _State()
