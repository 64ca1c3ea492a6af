"""Pure ``nn.Module`` networks (no Lightning imports)."""

from networks.unet import TinyUNet, UNet

__all__ = ["UNet", "TinyUNet"]
