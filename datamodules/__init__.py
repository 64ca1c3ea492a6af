"""LightningDataModules for the image data sets."""

from datamodules.base import ImageDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.idx import DataError
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.synthetic import SyntheticDataModule

__all__ = ["ImageDataModule", "MNISTDataModule", "FashionMNISTDataModule", "SyntheticDataModule", "ImageFolderDataModule",
           "DataError"]
