"""Severstal steel-defect data for COIGAN (seed 004): RLE, polygons, tiling, fair split, preparation, samples.

Plain functions and classes live in their own modules and are usable alone; ``SeverstalCOIGANDataModule``
only orchestrates them. Commands: ``python -m datamodules.severstal fixture|prepare --help``.
"""

from datamodules.severstal.datamodule import SeverstalCOIGANDataModule
from datamodules.severstal.dataset import COIGANSamples
from datamodules.severstal.fixture import make_fixture
from datamodules.severstal.noise import GaussianNoise, MultiscaleNoise, gaussian_noise, multiscale_noise
from datamodules.severstal.prepare import prepare_severstal
from datamodules.severstal.rle import RLEError, rle_decode, rle_encode

__all__ = ["SeverstalCOIGANDataModule", "COIGANSamples", "make_fixture", "prepare_severstal", "rle_decode", "rle_encode",
           "RLEError", "gaussian_noise", "multiscale_noise", "GaussianNoise", "MultiscaleNoise"]
