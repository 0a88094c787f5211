"""Training AWD-LSTM and fine-tuning it the ULMFiT way.

AWD-LSTM (Merity et al., 2018):

* :func:`batchify` and :func:`variable_bptt_windows`: the token stream cut into N rows read
  side by side, then windows of length seq_len ~ N(bptt, s) (s = 5) with probability p = 0.95,
  else N(bptt / 2, s); each window's learning rate is rescaled by seq_len / bptt;
* :class:`NTASGD`: non-monotonically triggered averaged SGD, plain SGD until the validation
  loss has not improved on the best of the checks more than ``n`` checks ago, then
  :class:`lamina.optim.ASGD` averaging from that step on (t0 = 0, lambd = 0).

ULMFiT (Howard and Ruder, 2018):

* :func:`discriminative_param_groups`: eta^{l-1} = eta^l / 2.6 going down the layer groups;
* :class:`SlantedTriangular` (STLR), over T steps with cut = floor(T cut_frac)::

      p = t / cut                                        t < cut
      p = 1 - (t - cut) / (cut (1 / cut_frac - 1))       otherwise
      eta_t = eta_max (1 + p (ratio - 1)) / ratio

* :class:`GradualUnfreezing`: all groups frozen but the last; each :meth:`~GradualUnfreezing.step`
  (one per epoch) unfreezes the next group down.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lamina import backend
from lamina.nn.module import Module
from lamina.optim.asgd import ASGD
from lamina.optim.schedules.base import Schedule, _check
from lamina.optim.sgd import SGD

__all__ = ["NTASGD", "GradualUnfreezing", "SlantedTriangular", "batchify", "discriminative_param_groups",
           "variable_bptt_windows"]


class SlantedTriangular(Schedule):
    """Slanted triangular learning rates (ULMFiT, eq. 3; formula in the module docstring): a
    short linear climb from eta_max / ``ratio`` to ``max_lr`` over the first ``cut_frac`` of the
    ``total_steps`` steps, then a long linear decay back to eta_max / ``ratio`` at step T.
    When T cut_frac is not a whole number the decay reaches p = 0 a little before T; p is held
    at 0 from there (and after T) rather than going negative."""

    def __init__(self, max_lr: float, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0,
                 per: str | None = None, optimizer: Any = None):
        _check("SlantedTriangular", "max_lr", max_lr)
        _check("SlantedTriangular", "total_steps", total_steps, strict=True)
        _check("SlantedTriangular", "ratio", ratio, low=1.0)
        if not 0.0 < cut_frac < 1.0:
            raise ValueError(f"SlantedTriangular: invalid cut_frac {cut_frac!r} (must be in (0, 1))")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.cut_frac = float(cut_frac)
        self.ratio = float(ratio)
        self.cut = max(1, math.floor(self.total_steps * self.cut_frac))
        super().__init__(self.max_lr / self.ratio, per, optimizer)

    def __call__(self, t: int) -> float:
        t = min(self._t(t), self.total_steps)
        if t < self.cut:
            p = t / self.cut
        else:
            p = 1.0 - (t - self.cut) / (self.cut * (1.0 / self.cut_frac - 1.0))
        p = max(p, 0.0)
        return self.max_lr * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def __repr__(self) -> str:
        return (f"SlantedTriangular(max_lr={self.max_lr}, total_steps={self.total_steps}, "
                f"cut_frac={self.cut_frac}, ratio={self.ratio}, t={self.t})")


def discriminative_param_groups(groups: list, lr: float, factor: float = 2.6) -> list[dict]:
    """Parameter groups for an optimizer, bottom group first: group l of L gets
    lr / factor^(L - 1 - l) (the top one ``lr``). ``groups``: lists of parameters or of
    modules (e.g. :meth:`lamina.models.AWDLSTM.group_parameters`). Made with
    ``SGD(groups, lr=lr)``, a schedule that sets the optimizer's lr keeps the ratios."""
    if not groups:
        raise ValueError("discriminative_param_groups: got no groups")
    if factor <= 0 or lr < 0:
        raise ValueError(f"discriminative_param_groups: need lr >= 0 and factor > 0, got lr={lr!r}, "
                         f"factor={factor!r}")
    out = []
    for i, group in enumerate(groups):
        params = []
        for item in group:
            params.extend(item.parameters() if isinstance(item, Module) else [item])
        out.append({"params": params, "lr": lr / factor ** (len(groups) - 1 - i)})
    return out


class GradualUnfreezing:
    """ULMFiT's gradual unfreezing over ``groups`` (bottom first; lists of modules or of
    parameters): at first only the last group learns; each :meth:`step` (once per epoch)
    unfreezes one more group, going down, until all learn."""

    def __init__(self, groups: list):
        if not groups:
            raise ValueError("GradualUnfreezing: got no groups")
        self.groups = [[p for item in g for p in (item.parameters() if isinstance(item, Module) else [item])]
                       for g in groups]
        self.unfrozen = 0
        self.step()

    def step(self) -> int:
        """Unfreeze the next group down; returns how many groups (from the top) now learn."""
        self.unfrozen = min(self.unfrozen + 1, len(self.groups))
        for i, group in enumerate(self.groups):
            learn = i >= len(self.groups) - self.unfrozen
            for p in group:
                p.unfreeze() if learn else p.freeze()
        return self.unfrozen


def batchify(tokens, batch_size: int) -> np.ndarray:
    """The token stream (L,) cut into ``batch_size`` rows read side by side, (N, L // N)
    (the remainder dropped)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < 2 * batch_size:
        raise ValueError(f"batchify: expected a 1-D token stream of at least 2 x batch_size = {2 * batch_size} "
                         f"tokens, got shape {tokens.shape}")
    width = len(tokens) // batch_size
    return tokens[:width * batch_size].reshape(batch_size, width)


def variable_bptt_windows(rows: np.ndarray, bptt: int, p: float = 0.95, std: float = 5.0, rng=None,
                          min_len: int = 5):
    """Yield (inputs, targets, lr_scale) windows over ``rows`` (N, L): seq_len is drawn from
    N(bptt, std) with probability ``p``, else from N(bptt / 2, std) (at least ``min_len``),
    targets are the inputs shifted by one, lr_scale = seq_len / bptt."""
    rng = backend.rng() if rng is None else rng
    i, width = 0, rows.shape[1]
    while i < width - 1:
        base = bptt if rng.random() < p else bptt / 2
        seq_len = max(min_len, int(round(rng.normal(base, std))))
        seq_len = min(seq_len, width - 1 - i)
        yield rows[:, i:i + seq_len], rows[:, i + 1:i + 1 + seq_len], seq_len / bptt
        i += seq_len


class NTASGD:
    """Non-monotonically triggered ASGD: :attr:`optimizer` is SGD(``params``, ``lr``) until
    :meth:`check` sees a validation loss no better than the best of those more than
    ``nonmono`` checks old, then an :class:`~lamina.optim.ASGD` (t0 = 0, lambd = 0) whose
    average starts at that switch (as torch's ASGD with t0 = 0: from its second step on);
    :meth:`averaged` gives the averaged weights, to evaluate with."""

    def __init__(self, params, lr: float, nonmono: int = 5, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr = float(lr)
        self.nonmono = int(nonmono)
        self.weight_decay = float(weight_decay)
        self.optimizer = SGD(self.params, lr=self.lr, weight_decay=self.weight_decay)
        self.history: list[float] = []
        self.averaging = False

    def check(self, val_loss: float) -> bool:
        """Record a validation loss; switch to averaging when it is no better than the best
        loss before the last ``nonmono`` checks. Returns whether averaging is on."""
        if (not self.averaging and len(self.history) > self.nonmono
                and val_loss > min(self.history[:-self.nonmono])):
            self.optimizer = ASGD(self.params, lr=self.lr, t0=0, lambd=0.0, weight_decay=self.weight_decay)
            self.averaging = True
        self.history.append(float(val_loss))
        return self.averaging

    def averaged(self) -> list:
        """The averaged weights once averaging is on; the current weights before."""
        if self.averaging:
            return self.optimizer.averaged()
        return [p.data.copy() for p in self.params]
