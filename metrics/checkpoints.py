"""One safe way to read a user's checkpoint file: checked, loaded with ``weights_only=True``, validated.

``weights_only=True`` refuses pickled code, so a crafted file cannot run anything on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_checkpoint(
    path: str | Path,
    *,
    config_key: str,
    how_to_make: str,
    expect_class: str,
    expect_prefix: str,
    missing_error: type[Exception] = FileNotFoundError,
    invalid_error: type[Exception] = ValueError,
) -> tuple[Path, dict[str, Any]]:
    """Load a Lightning checkpoint of a ``expect_class`` module whose state_dict has ``expect_prefix`` keys.

    Args:
        path: the file.
        config_key: the config key that holds the path (named in errors).
        how_to_make: the command that writes such a checkpoint (named in errors).
        expect_class: suffix of the module's ``_class_path`` hyper-parameter, e.g. ``VAEModule``.
        expect_prefix: a state_dict key prefix the module must have, e.g. ``vae.``.
        missing_error / invalid_error: exception types raised for a missing / an unusable file.
    """
    ckpt_path = Path(path).expanduser()
    if not ckpt_path.is_file():
        raise missing_error(f"{config_key} {str(ckpt_path)!r} does not exist. {how_to_make}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise invalid_error(f"{config_key} {str(ckpt_path)!r} is not a readable checkpoint ({type(err).__name__}: {err}). "
                            f"{how_to_make}") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    class_path = str((hparams or {}).get("_class_path", ""))
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    if not class_path.endswith(expect_class) or not any(k.startswith(expect_prefix) for k in state):
        raise invalid_error(f"{config_key} {str(ckpt_path)!r} is not a {expect_class} checkpoint (model class: "
                            f"{class_path or 'unknown'}). {how_to_make}")
    return ckpt_path, ckpt
