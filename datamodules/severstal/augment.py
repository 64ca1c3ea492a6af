"""Albumentations pipelines built from YAML-friendly specs: lists of ``{"transform": name, "args": {...}}`` dicts.

``transform`` names an albumentations class (``HorizontalFlip``, ``Affine``, ``RandomCrop``, ``Resize``, …), one of
ours (``RotateExpand``, ``PickK``) or any import path; ``args`` are its keyword arguments, and a ``transforms``
list inside them is built recursively, so wrappers nest. The keys are deliberately not ``class_path`` /
``init_args``: jsonargparse (LightningCLI) would instantiate nested ``class_path`` dicts itself and put
transform objects into the hyper-parameters. ``class_path`` / ``init_args`` are still accepted from Python.
Pipelines get ``image`` (H, W, 3 uint8) and, when paired, ``mask`` (H, W); masks use nearest-neighbour
interpolation.

Defaults follow the seed's training presets, minus two bugs (seed §8 items 9 and 10): base and reference
tiles get a horizontal **and a vertical** flip (the seed flipped horizontally twice), and object crops get
0, 1 or 2 of {rotation with canvas expansion, affine}: ``PickK`` bounds are inclusive (the seed's
``randint(0, 2)`` applied at most one).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np


def RotateExpand(limit: float = 180.0, expand: bool = True, p: float = 1.0) -> A.Affine:  # noqa: N802 (used as a class name in YAML)
    """Rotation by an angle in [−limit, limit]; with ``expand`` the canvas grows so no corner is cut."""
    return A.Affine(rotate=(-limit, limit), fit_output=expand, interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p)


class PickK(A.SomeOf):
    """Apply k transforms picked at random (without replacement) from ``transforms``, k uniform in [k_min, k_max] inclusive."""

    def __init__(self, transforms: Sequence[Any], k: int | Sequence[int] = (0, 1), replace: bool = False, p: float = 1.0) -> None:
        low, high = (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))
        if not 0 <= low <= high:
            raise ValueError(f"PickK needs 0 ≤ k_min ≤ k_max, got k = {k}")
        if not replace:
            high = min(high, len(transforms))
        super().__init__(transforms, n=max(high, 1), replace=replace, p=p)
        self.k_range = (min(low, high), high)

    def _get_idx(self) -> np.ndarray:
        n = int(self.random_generator.integers(self.k_range[0], self.k_range[1] + 1))
        return self.random_generator.choice(len(self.transforms), size=n, replace=self.replace)


LOCAL = {"RotateExpand": RotateExpand, "PickK": PickK}

DEFAULT_OBJECT_AUGMENTATIONS: list[dict[str, Any]] = [
    {"transform": "PickK", "args": {"k": [0, 2], "transforms": [
        {"transform": "RotateExpand", "args": {"limit": 180, "expand": True}},
        {"transform": "Affine",
         "args": {"translate_percent": [-0.1, 0.1], "scale": [0.7, 1.2], "shear": [-3, 3], "p": 1.0}},
    ]}},
]
DEFAULT_BASE_AUGMENTATIONS: list[dict[str, Any]] = [
    {"transform": "HorizontalFlip", "args": {"p": 0.5}},
    {"transform": "VerticalFlip", "args": {"p": 0.5}},
]


def _resolve(name: str) -> Any:
    if name in LOCAL:
        return LOCAL[name]
    short = name.removeprefix("albumentations.").removeprefix("A.")
    if "." not in short and hasattr(A, short):
        return getattr(A, short)
    module, _, attr = name.rpartition(".")
    if module:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            pass
    raise ValueError(f"Unknown augmentation {name!r}: use an albumentations class name (e.g. 'HorizontalFlip'), "
                     f"one of {sorted(LOCAL)}, or a full import path.")


def build_transform(spec: dict[str, Any] | Any) -> Any:
    """One transform from ``{"transform": name, "args": {...}}`` (an already built transform is returned as is)."""
    if not isinstance(spec, dict):
        return spec
    name = spec.get("transform", spec.get("class_path"))
    if name is None:
        raise ValueError(f"Augmentation spec {spec} needs a 'transform' (the class name) and optional 'args'.")
    args = dict(spec.get("args", spec.get("init_args")) or {})
    if "transforms" in args:
        args["transforms"] = [build_transform(t) for t in args["transforms"]]
    for key in ("scale", "translate_percent", "shear", "rotate", "limit", "size"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    cls = _resolve(name)
    if isinstance(cls, type) and issubclass(cls, A.DualTransform) and "mask_interpolation" in cls.__init__.__code__.co_varnames:
        args.setdefault("mask_interpolation", cv2.INTER_NEAREST)
    return cls(**args)


def build_pipeline(specs: Sequence[dict[str, Any]] | None) -> A.Compose | None:
    """A ``Compose`` of the specs, or None for an empty list."""
    if not specs:
        return None
    return A.Compose([build_transform(s) for s in specs])
