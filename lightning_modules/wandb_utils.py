"""W&B helpers: find the logger, choose online/offline mode, print the sync command."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def get_wandb_logger(trainer: Trainer) -> WandbLogger | None:
    """The trainer's WandbLogger, or None (callbacks then skip W&B but still write files)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger
    return None


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_wandb_mode() -> str:
    """Respect WANDB_MODE; otherwise go offline when there are no credentials or no network."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    reason = None
    if not _has_credentials():
        reason = "no W&B credentials (WANDB_API_KEY or `wandb login`)"
    elif not _reachable():
        reason = "api.wandb.ai is not reachable"
    if reason:
        os.environ["WANDB_MODE"] = "offline"
        rank_zero_info(f"W&B: {reason}; logging offline. Set WANDB_MODE=disabled to turn W&B off.")
        return "offline"
    return "online"


def offline_sync_hint(logger: Any) -> str | None:
    """The `wandb sync` command for an offline run, or None when the run is online or disabled."""
    if os.environ.get("WANDB_MODE") not in ("offline", "dryrun"):
        return None
    try:
        run_dir = Path(logger.experiment.dir).parent
    except Exception:  # noqa: BLE001 - no run directory means nothing to sync
        return None
    return f"wandb sync {run_dir}"
