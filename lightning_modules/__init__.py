"""LightningModules, one per file."""

from lightning_modules.ddpm import DDPMModule

__all__ = ["DDPMModule"]
