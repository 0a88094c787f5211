"""Denoising diffusion models: DDPM (Ho et al. 2020) trained on noise prediction, sampled
by DDPM's ancestral steps or by DDIM (Song et al. 2021) on fewer steps.

Training (:meth:`DiffusionModel.loss`): for data x_0, a step t drawn uniformly from
0 .. T-1 and noise eps ~ N(0, I), the network sees x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps (:mod:`lamina.models.diffusion_schedule`) and t, and is trained by
mean squared error to predict eps (``prediction='eps'``, Ho et al.'s simple loss), x_0, or
v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.

Sampling (:meth:`DiffusionModel.sample`) starts from x_T ~ N(0, I) and steps back through
timesteps t_K > ... > t_1 (all T, or ``steps`` of them evenly spaced), each time turning the
network's output into predictions x_0^ and eps^:

* ``method='ddpm'``: x_{t_{k-1}} ~ q(x_{t_{k-1}} | x_{t_k}, x_0 = x_0^), the posterior of the
  schedule (respaced to the chosen timesteps), whose variance is beta~; no noise at the end;
* ``method='ddim'``: x_{t_{k-1}} = sqrt(abar_prev) x_0^ + sqrt(1 - abar_prev - sigma^2) eps^
  + sigma z, sigma = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)):
  deterministic for eta = 0, DDPM's step for eta = 1.

``scheduler=`` samples instead with one of :mod:`lamina.models.schedulers` (diffusers'
interface: DDPM, DDIM, PNDM, Euler, Euler ancestral, Heun, LMS, DPM-Solver++), made for the
model's betas and prediction by :meth:`DiffusionModel.make_scheduler`.

``clip_x0`` clips x_0^ (to [-c, c] or a (low, high) range, e.g. the data's) and recomputes
eps^ from it. It matters most for DDIM when alpha_bar_{T-1} is tiny (the cosine schedule's
is about 1e-6 for T = 50): there x_0^ = (x_t - sqrt(1 - abar) eps^) / sqrt(abar) multiplies
the net's error in eps^ by 1 / sqrt(abar), which no later deterministic step washes out.

Classifier-free guidance (Ho and Salimans 2022): a denoiser with ``num_classes`` is trained
with its labels replaced by the "no class" label at the rate ``label_dropout``; sampling with
``labels`` and ``guidance_scale`` w uses out = out(x, t, no class) + w (out(x, t, y) -
out(x, t, no class)) (w = 1: plain conditional). A net taking a ``context`` sequence
(:class:`~lamina.models.CrossAttentionUNet`, text conditioning) is guided the same way: the
context is swapped for the net's learned null context at the same rate in training, and
sampling with ``context`` mixes the context's and the null context's outputs.

Example::

    model = DiffusionModel(DenoisingMLP(hidden=(64, 64)), schedule="cosine", num_timesteps=100)
    train_diffusion(model, x, epochs=30, batch_size=128, lr=3e-3, ema=0.99)
    samples = model.sample(1000)                                   # DDPM, all 100 steps
    quick = model.sample(1000, steps=25, method="ddim", clip_x0=3.0)
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import DenoisingMLP, DenoisingUNet, TimeResidualBlock, timestep_embedding
from lamina.models.diffusion_schedule import SCHEDULES, NoiseSchedule, make_schedule
from lamina.nn.layer import describe, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["PREDICTIONS", "SAMPLERS", "SCHEDULES", "DenoisingMLP", "DenoisingUNet", "DiffusionModel",
           "NoiseSchedule", "TimeResidualBlock", "make_schedule", "timestep_embedding"]

PREDICTIONS = ("eps", "x0", "v")
SAMPLERS = ("ddpm", "ddim")
SCHEDULER_PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def _schedule_from(schedule, num_timesteps: int) -> NoiseSchedule:
    if isinstance(schedule, NoiseSchedule):
        return schedule
    if isinstance(schedule, dict):
        return NoiseSchedule.from_config(schedule)
    if isinstance(schedule, str):
        return make_schedule(schedule, num_timesteps)
    raise TypeError(f"DiffusionModel: schedule must be one of {SCHEDULES}, a NoiseSchedule or its config, "
                    f"got {type(schedule).__name__}")


def class_labels(labels, n: int, num_classes: int | None, who: str) -> np.ndarray | None:
    """The class labels of ``n`` samples for a class-conditional net of ``num_classes`` classes
    (one label broadcast to all), as int64; None for None; a ValueError naming ``who`` when the
    net is unconditional or a label is out of range."""
    if labels is None:
        return None
    if num_classes is None:
        raise ValueError(f"{who}: got labels, but the net has no num_classes (it is unconditional)")
    values = np.asarray(backend.to_numpy(labels.data) if isinstance(labels, Tensor) else labels)
    if values.ndim == 0:
        values = np.full(n, values)
    if values.shape != (n,) or values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= num_classes:
        raise ValueError(f"{who}: labels must be {n} integers in [0, {num_classes}), got {describe(values)}")
    return values.astype(np.int64)


@register_layer
class DiffusionModel(Module):
    """A denoiser ``net`` (called as ``net(x_t, t)``, or ``net(x_t, t, y)`` with class labels)
    and a noise schedule: the training loss and the samplers of the module notes.

    ``schedule``: 'linear', 'cosine' or 'sigmoid' over ``num_timesteps`` steps, or a
    :class:`NoiseSchedule`. ``prediction``: what the net predicts, 'eps', 'x0' or 'v'.
    ``sample_shape``: the shape of one sample, or None to take it from the first input.
    ``label_dropout``: the rate at which :meth:`loss` swaps labels for the net's "no class"
    (``net.num_classes``), for classifier-free guidance. Calling the model runs the net.
    """

    def __init__(self, net: Module, schedule="linear", num_timesteps: int = 1000, prediction: str = "eps",
                 sample_shape=None, label_dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(net, Module):
            raise TypeError(f"DiffusionModel: net must be a Module called as net(x_t, t), got {type(net).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"DiffusionModel: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if isinstance(label_dropout, bool) or not isinstance(label_dropout, numbers.Real) \
                or not 0 <= label_dropout <= 1:
            raise ValueError(f"DiffusionModel: label_dropout must be a number in [0, 1], got {label_dropout!r}")
        self.net = net
        self.schedule = _schedule_from(schedule, num_timesteps)
        self.prediction, self.label_dropout = prediction, float(label_dropout)
        self.sample_shape = None if sample_shape is None else tuple(
            positive_int(n, "DiffusionModel: sample_shape") for n in sample_shape)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def num_classes(self) -> int | None:
        """The net's number of classes (None: unconditional)."""
        return getattr(self.net, "num_classes", None)

    # -- running the net ------------------------------------------------------------------
    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        sample = shape[1:]
        if self.sample_shape is not None and sample != self.sample_shape:
            raise ShapeError(f"{self._label()}: got inputs of shape {shape}; the model makes samples of shape "
                             f"{self.sample_shape}")
        self.sample_shape = tuple(int(n) for n in sample)
        self.built = True

    def forward(self, x_t, t, y=None, context=None) -> Tensor:
        """The net's output at the noisy samples ``x_t`` and timesteps ``t`` (labels ``y``, a
        conditioning sequence ``context``)."""
        if context is not None:
            return self.net(x_t, t, y, context=context)
        return self.net(x_t, t) if y is None else self.net(x_t, t, y)

    def _run(self, x_t, t, y, context) -> Tensor:
        """The model called with only the conditions given (a first call records the shapes of
        its positional inputs, which must not hold None)."""
        inputs = (x_t, t) if y is None else (x_t, t, y)
        return self(*inputs) if context is None else self(*inputs, context=context)

    def _checked_data(self, x0, who: str) -> Tensor:
        x0 = as_tensor(x0)
        if x0.ndim < 2 or (self.sample_shape is not None and tuple(x0.shape[1:]) != self.sample_shape):
            sizes = "..." if self.sample_shape is None else ", ".join(map(str, self.sample_shape))
            expected = f"(batch, {sizes})"
            raise ShapeError(f"{self._label()}.{who}: got data of {describe(x0)}; expected {expected}")
        return x0

    def _labels(self, labels, n: int, who: str) -> np.ndarray | None:
        return class_labels(labels, n, self.num_classes, f"{self._label()}.{who}")

    def _context(self, context, n: int, who: str) -> Tensor | None:
        """The conditioning sequence as (n, length, dim) (one (length, dim) sequence is
        repeated), checked to suit a net that has a null context."""
        if context is None:
            return None
        if not callable(getattr(self.net, "null_context", None)):
            raise ValueError(f"{self._label()}.{who}: got a context, but the net takes none (it has no null_context)")
        context = as_tensor(context)
        if context.ndim == 2:
            context = F.reshape(context, 1, *context.shape)
        if context.ndim == 3 and context.shape[0] == 1 and n > 1:
            context = F.concat([context] * n, axis=0)
        if context.ndim != 3 or context.shape[0] != n:
            raise ShapeError(f"{self._label()}.{who}: got a context of {describe(context)}; expected ({n}, length, "
                             "dim) or one (length, dim) sequence")
        return context

    def _null_context(self, context: Tensor) -> Tensor:
        return self.net.null_context(context.shape[0], context.shape[1])

    # -- training -------------------------------------------------------------------------
    def loss(self, x0, labels=None, t=None, noise=None, context=None) -> Tensor:
        """The mean squared error of the net's prediction (eps, x_0 or v) at x_t = q_sample(x_0,
        t, eps), over every value of the batch ``x0``. ``t`` (default: uniform on 0 .. T-1) and
        ``noise`` (default: N(0, I)) are drawn from lamina's generator unless given; class
        ``labels`` are swapped for "no class", and the rows of the conditioning sequence
        ``context`` for the net's null context, at the rate ``label_dropout`` (one draw per
        sample drops both)."""
        x0 = self._checked_data(x0, "loss")
        n, rng = x0.shape[0], backend.rng()
        steps = rng.integers(0, self.num_timesteps, n) if t is None else self.schedule.timesteps(
            t, n, f"{self._label()}.loss")
        if noise is None:
            noise = Tensor._wrap(backend.xp.asarray(rng.standard_normal(x0.shape), dtype=x0.dtype))
        noise = as_tensor(noise)
        if noise.shape != x0.shape:
            raise ShapeError(f"{self._label()}.loss: noise of {describe(noise)} does not match x0 of {describe(x0)}")
        x_t = self.schedule.q_sample(x0, steps, noise)
        y, context = self._labels(labels, n, "loss"), self._context(context, n, "loss")
        if (y is not None or context is not None) and self.label_dropout > 0:
            dropped = rng.random(n) < self.label_dropout
            if y is not None:
                y = np.where(dropped, self.net.null_class, y)
            if context is not None:
                keep = Tensor._wrap(backend.xp.asarray((~dropped).reshape(n, 1, 1), dtype=context.dtype))
                context = context * keep + self._null_context(context) * (1.0 - keep)
        output = self._run(x_t, steps, y, context)
        target = {"eps": noise, "x0": x0, "v": self.schedule.velocity(x0, steps, noise)}[self.prediction]
        if output.shape != target.shape:
            raise ShapeError(f"{self._label()}.loss: the net gives {describe(output)} for inputs of "
                             f"{describe(x_t)}; it must give the inputs' shape")
        diff = output - target
        return (diff * diff).mean()

    # -- sampling ------------------------------------------------------------------------
    def sampling_timesteps(self, steps: int | None = None) -> np.ndarray:
        """The increasing timesteps the samplers visit: all T, or ``steps`` of them evenly spaced
        from 0 to T-1 (rounded; T-1 always, 0 when steps > 1)."""
        if steps is None:
            return np.arange(self.num_timesteps)
        steps = positive_int(steps, f"{self._label()}.sample: steps")
        if steps > self.num_timesteps:
            raise ValueError(f"{self._label()}.sample: steps={steps} exceeds the model's {self.num_timesteps} "
                             "timesteps")
        return np.round(np.linspace(self.num_timesteps - 1, 0, steps))[::-1].astype(np.int64)

    def guided_output(self, x_t, steps: np.ndarray, labels=None, guidance_scale: float = 1.0,
                      context=None) -> Tensor:
        """The net's output at ``x_t`` and the N timesteps ``steps`` (ints, or floats for the
        schedulers that use them), with classifier-free guidance when ``guidance_scale`` != 1:
        the conditional output (``labels``, ``context``) against the unconditional one (no
        class, the null context)."""
        x_t = as_tensor(x_t)
        n = x_t.shape[0]
        if labels is None and context is None:
            return self(x_t, steps)
        if guidance_scale == 1:
            return self._run(x_t, steps, labels, context)
        both = self._run(F.concat([x_t, x_t], axis=0), np.concatenate([steps, steps]),
                    None if labels is None else np.concatenate([labels, np.full(n, self.net.null_class)]),
                    None if context is None else F.concat([context, self._null_context(context)], axis=0))
        conditional, unconditional = both[:n], both[n:]
        return unconditional + guidance_scale * (conditional - unconditional)

    def predict_x0_eps(self, x_t, t, labels=None, guidance_scale: float = 1.0,
                       clip_x0=None, context=None) -> tuple[Tensor, Tensor]:
        """The net's predictions (x_0^, eps^) at ``x_t`` and timesteps ``t`` (with classifier-free
        guidance when ``guidance_scale`` != 1; x_0^ clipped to ``clip_x0`` and eps^ recomputed)."""
        x_t = as_tensor(x_t)
        steps = self.schedule.timesteps(t, x_t.shape[0], f"{self._label()}.predict_x0_eps")
        context = self._context(context, x_t.shape[0], "predict_x0_eps")
        out = self.guided_output(x_t, steps, labels, guidance_scale, context)
        schedule = self.schedule
        if self.prediction == "eps":
            x0, eps = schedule.predict_x0(x_t, steps, out), out
        elif self.prediction == "x0":
            x0, eps = out, schedule.predict_eps(x_t, steps, out)
        else:
            x0, eps = schedule.x0_from_velocity(x_t, steps, out), schedule.eps_from_velocity(x_t, steps, out)
        if clip_x0 is not None:
            low, high = clip_x0
            x0 = Tensor._wrap(backend.xp.clip(x0.data, low, high))
            eps = schedule.predict_eps(x_t, steps, x0)
        return x0, eps

    def sample(self, n: int, steps: int | None = None, method: str = "ddpm", eta: float = 0.0, clip_x0=None,
               labels=None, guidance_scale: float = 1.0, start=None, scheduler=None, context=None) -> np.ndarray:
        """``n`` samples, a NumPy array (n, *sample_shape), drawn with the sampler ``method``
        ('ddpm' or 'ddim', see the module notes) over ``steps`` timesteps (None: all T), without
        recording a graph. ``eta``: DDIM's noise scale (0: deterministic). ``clip_x0``: a number
        c (x_0^ clipped to [-c, c]) or a (low, high) pair. ``labels`` (n ints, or one) and
        ``guidance_scale``: classifier-free guidance. ``start``: x_T (default: N(0, I) from
        lamina's generator, which also gives the noise of the steps). ``scheduler``: sample
        instead with a :mod:`lamina.models.schedulers` scheduler (an instance made for this
        model's betas and prediction, or its class name, see :meth:`make_scheduler`) over
        ``steps`` timesteps (default 50), ``eta`` passed to DDIM's. ``context``: a conditioning
        sequence (n, length, dim), or one (length, dim) for all, for a net that takes one;
        guided by ``guidance_scale`` against the null context."""
        who = f"{self._label()}.sample"
        n = positive_int(n, f"{who}: n")
        if method not in SAMPLERS:
            raise ValueError(f"{who}: method must be one of {SAMPLERS}, got {method!r}")
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
            raise ValueError(f"{who}: eta must be a number >= 0, got {eta!r}")
        if method == "ddpm" and eta != 0 and scheduler is None:
            raise ValueError(f"{who}: eta sets the noise of DDIM steps; method='ddpm' always adds the posterior's")
        if self.sample_shape is None:
            raise RuntimeError(f"{who}: the sample shape is unknown; give sample_shape= or train the model first")
        clip = _clip_range(clip_x0, who)
        y, context = self._labels(labels, n, "sample"), self._context(context, n, "sample")
        if guidance_scale != 1 and y is None and context is None:
            raise ValueError(f"{who}: guidance_scale={guidance_scale!r} needs labels or a context to guide towards")
        timesteps = self.sampling_timesteps(steps)
        params = self.parameters()
        dtype = params[0].dtype if params else backend.get_default_dtype()
        rng = backend.rng()
        shape = (n, *self.sample_shape)
        if start is None:
            start = rng.standard_normal(shape)
        x = as_tensor(backend.xp.asarray(start, dtype=dtype))
        if tuple(x.shape) != shape:
            raise ShapeError(f"{who}: start of {describe(x)} must have shape {shape}")

        if scheduler is not None:
            if method != "ddpm" or clip_x0 is not None:
                raise ValueError(f"{who}: with a scheduler, set clipping in its config (clip_sample, thresholding) "
                                 "and leave method and clip_x0 at their defaults")
            return self._sample_with_scheduler(scheduler, steps, x, y, guidance_scale, eta, rng, context)

        def noise():
            return Tensor._wrap(backend.xp.asarray(rng.standard_normal(shape), dtype=dtype))

        respaced = self.schedule if steps is None else self.schedule.respaced(timesteps)
        with no_grad(), evaluation_mode(self):
            for k in range(len(timesteps) - 1, -1, -1):
                t = timesteps[k]
                x0, eps = self.predict_x0_eps(x, t, y, guidance_scale, clip, context)
                if method == "ddim":
                    previous = timesteps[k - 1] if k > 0 else -1
                    x = self.schedule.ddim_step(x0, eps, t, previous, eta, noise() if eta > 0 and k > 0 else None)
                else:
                    mean, variance = respaced.posterior_mean_variance(x0, x, k)
                    x = mean + Tensor._wrap(backend.xp.sqrt(variance.data)) * noise() if k > 0 else mean
        return np.asarray(backend.to_numpy(x.data))

    def make_scheduler(self, name: str, **config):
        """The scheduler class ``name`` (e.g. 'DPMSolverMultistepScheduler') for this model: its
        training betas and prediction type, no clipping unless ``config`` asks."""
        from lamina.models.schedulers import SCHEDULERS

        if name not in SCHEDULERS:
            raise ValueError(f"{self._label()}.make_scheduler: name must be one of {sorted(SCHEDULERS)}, got {name!r}")
        settings = {"num_train_timesteps": self.num_timesteps, "trained_betas": self.schedule.betas,
                    "prediction_type": SCHEDULER_PREDICTIONS[self.prediction]}
        if "clip_sample" in SCHEDULERS[name].defaults:
            settings["clip_sample"] = False
        return SCHEDULERS[name](**{**settings, **config})

    def _checked_scheduler(self, scheduler, who: str):
        from lamina.models.schedulers import Scheduler

        if isinstance(scheduler, str):
            return self.make_scheduler(scheduler)
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"{who}: scheduler must be a lamina.models.schedulers scheduler or its class name, got "
                            f"{type(scheduler).__name__}")
        expected = SCHEDULER_PREDICTIONS[self.prediction]
        if scheduler.config["prediction_type"] != expected:
            raise ValueError(f"{who}: the model predicts {self.prediction!r}, so the scheduler needs prediction_type="
                             f"{expected!r}, got {scheduler.config['prediction_type']!r}")
        if len(scheduler) != self.num_timesteps or not np.allclose(scheduler.alphas_cumprod, self.schedule.alpha_bars,
                                                                   rtol=1e-6, atol=0):
            raise ValueError(f"{who}: the scheduler's {len(scheduler)} training betas differ from the model's "
                             f"{self.num_timesteps}; build it with model.make_scheduler(name)")
        return scheduler

    def _sample_with_scheduler(self, scheduler, steps, x: Tensor, labels, guidance_scale: float, eta: float,
                               rng, context=None) -> np.ndarray:
        who = f"{self._label()}.sample"
        scheduler = self._checked_scheduler(scheduler, who)
        scheduler.set_timesteps(min(50, self.num_timesteps) if steps is None else steps)
        extra = {"eta": eta} if type(scheduler).__name__ == "DDIMScheduler" else {}
        if eta != 0 and not extra:
            raise ValueError(f"{who}: eta is DDIM's noise scale; {type(scheduler).__name__} takes none")
        dtype = x.dtype
        sample = np.asarray(backend.to_numpy(x.data)) * scheduler.init_noise_sigma
        n = sample.shape[0]
        with no_grad(), evaluation_mode(self):
            for t in scheduler.timesteps:
                inputs = backend.xp.asarray(scheduler.scale_model_input(sample, t), dtype=dtype)
                out = self.guided_output(inputs, np.full(n, t), labels, guidance_scale, context)
                sample = scheduler.step(np.asarray(backend.to_numpy(out.data)), t, sample, generator=rng,
                                        **extra).prev_sample
        return sample.astype(dtype)

    # -- configuration ---------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"net": layer_to_config(self.net), "schedule": self.schedule.get_config(),
                "prediction": self.prediction,
                "sample_shape": None if self.sample_shape is None else list(self.sample_shape),
                "label_dropout": self.label_dropout, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> DiffusionModel:
        config = dict(config)
        config["net"] = layer_from_config(config["net"])
        return cls(**config)

    def extra_repr(self) -> str:
        return f"{self.schedule.kind} schedule, T={self.num_timesteps}, prediction={self.prediction!r}"


def _clip_range(clip_x0, who: str) -> tuple[float, float] | None:
    if clip_x0 is None:
        return None
    if isinstance(clip_x0, numbers.Real) and not isinstance(clip_x0, bool):
        if not clip_x0 > 0:
            raise ValueError(f"{who}: clip_x0 must be a positive number or a (low, high) pair, got {clip_x0!r}")
        return -float(clip_x0), float(clip_x0)
    try:
        low, high = (float(v) for v in clip_x0)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: clip_x0 must be a positive number or a (low, high) pair, got {clip_x0!r}") from None
    if not low < high:
        raise ValueError(f"{who}: clip_x0 must have low < high, got {clip_x0!r}")
    return low, high
