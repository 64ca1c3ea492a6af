"""LightningDataModules for the image data sets."""

from datamodules.augment import RandomAffine
from datamodules.base import ImageDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.idx import DataError
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.restoration import InpaintingDataModule, SlerpDataModule
from datamodules.scan_folder import ScanFolderDataModule
from datamodules.severstal import SeverstalCOIGANDataModule
from datamodules.synthetic import SyntheticDataModule

__all__ = ["ImageDataModule", "MNISTDataModule", "FashionMNISTDataModule", "SyntheticDataModule", "ImageFolderDataModule",
           "DataError", "SeverstalCOIGANDataModule", "ScanFolderDataModule",
           "InpaintingDataModule", "SlerpDataModule", "RandomAffine"]
