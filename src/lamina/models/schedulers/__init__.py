"""Diffusion samplers with Hugging Face diffusers' scheduler interface, and EDM (Karras et al.
2022). See :mod:`lamina.models.schedulers.base` for the interface and the sampling loop.

Example::

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(20)
    x = rng.standard_normal(shape) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x).prev_sample
"""

from lamina.models.schedulers.base import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    Scheduler,
    SchedulerOutput,
    karras_sigmas,
    make_betas,
)
from lamina.models.schedulers.discrete import DDIMScheduler, DDPMScheduler, PNDMScheduler
from lamina.models.schedulers.dpm_singlestep import DPMSolverSinglestepScheduler, singlestep_orders
from lamina.models.schedulers.dpm_solver import DPMSolverMultistepScheduler
from lamina.models.schedulers.edm import EDMPrecond, edm_coefficients, edm_loss, edm_sampler
from lamina.models.schedulers.sigma import (
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
)
from lamina.models.schedulers.unipc import UniPCMultistepScheduler

SCHEDULERS = {cls.__name__: cls for cls in (
    DDPMScheduler, DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler, LMSDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler,
    DPMSolverSinglestepScheduler)}

__all__ = ["BETA_SCHEDULES", "PREDICTION_TYPES", "SCHEDULERS", "TIMESTEP_SPACINGS", "DDIMScheduler", "DDPMScheduler",
           "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EDMPrecond",
           "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
           "PNDMScheduler", "Scheduler", "SchedulerOutput", "UniPCMultistepScheduler", "edm_coefficients", "edm_loss",
           "edm_sampler", "karras_sigmas", "make_betas", "singlestep_orders"]
