"""Checks that a model's fixed facts (image size, channels, value range, classes) match its data module."""

from __future__ import annotations

from typing import Any


def check_matches_data(image_shape: tuple[int, int, int], value_range: tuple[float, float], dm: Any,
                       num_classes: int = 0) -> None:
    """Raise a ValueError naming both config keys when the model and the data disagree."""
    if dm is None:
        return
    checks = {"image_size": (image_shape[1], getattr(dm, "image_size", None)),
              "channels": (image_shape[0], getattr(dm, "channels", None)),
              "value_range": (tuple(value_range), getattr(dm, "value_range", None))}
    for key, (mine, theirs) in checks.items():
        theirs = tuple(theirs) if isinstance(theirs, (list, tuple)) else theirs
        if theirs is not None and mine != theirs:
            raise ValueError(f"model.{key}={mine} does not match data.{key}={theirs}. Set both to the same value in the config.")
    if num_classes and getattr(dm, "num_classes", num_classes) != num_classes:
        raise ValueError(f"the denoiser has num_classes={num_classes} but the data has {dm.num_classes} classes.")
