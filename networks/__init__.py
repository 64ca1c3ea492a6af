"""Pure ``nn.Module`` networks (no Lightning imports)."""

from networks.classifier import FeatureCNN
from networks.denoiser import Denoiser
from networks.ffc import FFCResNetGenerator
from networks.optim import MuonAdamW
from networks.swagan import SWAGANDiscriminator
from networks.unet import TinyUNet, UNet
from networks.unet2d import UNET2D_PRESETS, UNet2D
from networks.uvit import UVIT_PRESETS, UViT
from networks.vae import VAE

__all__ = ["Denoiser", "UNet", "TinyUNet", "VAE", "FeatureCNN", "FFCResNetGenerator", "SWAGANDiscriminator",
           "UNet2D", "UViT", "UNET2D_PRESETS", "UVIT_PRESETS", "MuonAdamW"]
