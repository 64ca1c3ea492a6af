"""Diffusion maths: noise processes, samplers that own their loop, hooks. Pure PyTorch, no Lightning."""

from diffusion.guidance import autoguidance, check_guidance_interval, classifier_free_guidance, interval_weight
from diffusion.hooks import Inpaint, Trajectory
from diffusion.loss_weighting import EDMWeighting, LossWeighting, MinSNR
from diffusion.ncsn import LogSigmaVESDE, NCSNProcess
from diffusion.noise_levels import LogNormalSigma, NoiseLevelDistribution, Stratified, Uniform
from diffusion.processes import DiscreteVPProcess, NoiseProcess
from diffusion.repaint import RePaint
from diffusion.restoration import Colourise, TaskSampler, ddim_decode, ddim_invert, ddim_times, slerp
from diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DenoiseFn,
    DiscreteSampler,
    Prediction,
    SampleOutput,
    Sampler,
    StepState,
    dynamic_threshold,
)
from diffusion.sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE, as_sde
from diffusion.sde_samplers import (
    AdaptiveODE,
    AnnealedLangevin,
    EulerMaruyama,
    HeunODE,
    Langevin,
    PredictorCorrector,
    SDESampler,
)

__all__ = [
    "NoiseProcess",
    "DiscreteVPProcess",
    "Sampler",
    "DiscreteSampler",
    "DDPMSampler",
    "DDIMSampler",
    "DenoiseFn",
    "dynamic_threshold",
    "Prediction",
    "SampleOutput",
    "StepState",
    "Inpaint",
    "LossWeighting",
    "MinSNR",
    "EDMWeighting",
    "NoiseLevelDistribution",
    "LogNormalSigma",
    "Stratified",
    "Uniform",
    "Trajectory",
    "classifier_free_guidance",
    "autoguidance",
    "interval_weight",
    "check_guidance_interval",
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "as_sde",
    "SDESampler",
    "EulerMaruyama",
    "PredictorCorrector",
    "HeunODE",
    "AdaptiveODE",
    "AnnealedLangevin",
    "Langevin",
    "LogSigmaVESDE",
    "NCSNProcess",
    "RePaint",
    "Colourise",
    "TaskSampler",
    "ddim_decode",
    "ddim_invert",
    "ddim_times",
    "slerp",
]
