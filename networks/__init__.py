"""Pure ``nn.Module`` networks (no Lightning imports)."""

from networks.classifier import FeatureCNN
from networks.unet import TinyUNet, UNet
from networks.vae import VAE

__all__ = ["UNet", "TinyUNet", "VAE", "FeatureCNN"]
