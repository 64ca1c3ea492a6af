"""Diffusion maths: noise schedules and samplers. Pure PyTorch, no Lightning."""

from diffusion.guidance import classifier_free_guidance
from diffusion.samplers import DDIMSampler, DDPMSampler, Sampler, SamplingConfig, make_sampler
from diffusion.schedules import NoiseSchedule

__all__ = [
    "NoiseSchedule",
    "Sampler",
    "DDPMSampler",
    "DDIMSampler",
    "make_sampler",
    "SamplingConfig",
    "classifier_free_guidance",
]
