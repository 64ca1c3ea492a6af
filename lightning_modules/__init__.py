"""LightningModules, one per file."""

from lightning_modules.coigan import COIGANModule
from lightning_modules.ddpm import DDPMModule
from lightning_modules.diffuse_vae import DiffuseVAEModule
from lightning_modules.feature_classifier import FeatureClassifierModule
from lightning_modules.vae import VAEModule

__all__ = ["COIGANModule", "DDPMModule", "VAEModule", "DiffuseVAEModule", "FeatureClassifierModule"]
