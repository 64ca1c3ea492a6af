"""Hyper-parameter saving that keeps checkpoints loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from typing import Sequence

from lightning.pytorch import LightningModule
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters


def save_config_hparams(module: LightningModule, objects: Sequence[str] = ()) -> None:
    """``save_hyperparameters`` that drops object-valued arguments when the module is built in Python.

    Under LightningCLI the saved hparams are the parsed config (``class_path`` dicts), which are safe and
    let ``--ckpt_path`` rebuild the model; built in Python, ``objects`` (modules, classes) are left out.
    """
    from_config = _given_hyperparameters.get() is not None  # set by LightningCLI's instantiator
    module.save_hyperparameters(ignore=None if from_config else list(objects), logger=False, frame=_caller_frame())


def _caller_frame():
    import inspect

    return inspect.currentframe().f_back.f_back  # the __init__ that called save_config_hparams
