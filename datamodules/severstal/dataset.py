"""The COIGAN training samples: base tile + reference tile + placed defects + noised masks (seed §4.8).

``COIGANSamples`` is an ``IterableDataset``: each DataLoader worker runs its own stream whose random state
comes from (seed, global rank, worker id, epoch), so workers and DDP ranks draw different tiles, objects and
placements (the seed gave every worker the same ``random.Random(seed)``; §8 item 12). A sample is a dict:

============================  =============  ==========================================================
key                           shape          content
============================  =============  ==========================================================
``base``                      (3, S, S)      defect-free tile in [0, 1]
``ref``                       (3, S, S)      reference (train) tile in [0, 1]; only with ``use_ref``
``gen_input``                 (3 + N, S, S)  base (zeroed under the masks if ``mask_base_img``) ++ noised masks
``disc_input``                (3·N, S, S)    per class, the real defect pixels on black, classes stacked
``orig_gen_input_masks``      (N, S, S)      clean {0, 1} masks given to the generator
``gen_input_union_mask``      (S, S)         union of those masks
============================  =============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules.idx import DataError
from datamodules.severstal.augment import build_pipeline
from datamodules.severstal.jsonl import JsonLineDataset
from datamodules.severstal.noise import GaussianNoise, MultiscaleNoise
from datamodules.severstal.placement import draw_count, place_object
from datamodules.severstal.polygons import polygons_to_mask
from datamodules.severstal.source import read_rgb


class IndexStream:
    """Indices 0..n−1 in a shuffled order, reshuffled when used up (draws without replacement per round)."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        if n < 1:
            raise ValueError("cannot draw from an empty data set")
        self.n, self.rng, self.order, self.pos = n, rng, np.empty(0, dtype=np.int64), 0

    def next(self) -> int:
        if self.pos >= len(self.order):
            self.order, self.pos = self.rng.permutation(self.n), 0
        self.pos += 1
        return int(self.order[self.pos - 1])


def build_noise(spec: dict[str, Any] | None) -> GaussianNoise | MultiscaleNoise:
    """Noise generator from ``{"class_path": "datamodules.severstal.noise.MultiscaleNoise", "init_args": {...}}``.

    ``GaussianNoise`` works the same way.

    Bare class names work from Python; YAML needs the full path (jsonargparse checks ``class_path`` values).
    """
    if spec is None:
        return MultiscaleNoise()
    name = str(spec.get("class_path", "MultiscaleNoise")).rsplit(".", 1)[-1]
    classes = {"MultiscaleNoise": MultiscaleNoise, "GaussianNoise": GaussianNoise}
    if name not in classes:
        raise ValueError(f"noise class_path must be MultiscaleNoise or GaussianNoise, got {spec.get('class_path')!r}")
    return classes[name](**(spec.get("init_args") or {}))


def stream_seed(seed: int, rank: int, worker: int, epoch: int) -> np.random.SeedSequence:
    """The random state of one worker's stream; distinct for every (seed, rank, worker, epoch)."""
    return np.random.SeedSequence([seed, rank, worker, epoch])


class COIGANSamples(IterableDataset):
    """Endless-style stream of COIGAN sample dicts, ``length`` per epoch and rank, split over the workers.

    Args:
        prepared_dir: output of ``prepare`` (base_dataset, tile_train_set, object_datasets/).
        image_size: tile side S; prepared tiles must have this size.
        num_classes: N defect classes.
        length: samples per epoch on this rank (summed over its workers).
        seed, rank, epoch: the stream's random state is drawn from (seed, rank, worker id, epoch).
        object_counts, object_probs: how many objects of each class a sample gets, and how likely each count is.
        force_non_empty: the last class visited gets at least one object if the sample is still empty.
        placement_tries: random positions tried per object before it is skipped.
        mask_base_img: zero the base under the union mask in ``gen_input``.
        different_shapes: the generator gets other objects' masks (placed independently) than the defects
            in ``disc_input`` (the seed's ShapeObjectDataloader); otherwise the same masks.
        use_ref: add the reference tile ``ref``.
        noise: noise spec (see ``build_noise``).
        object_augmentations, base_augmentations: albumentations specs (see ``augment.py``).
    """

    def __init__(self, prepared_dir: str | Path, image_size: int = 256, num_classes: int = 4, length: int = 1000,
                 seed: int = 42, rank: int = 0, epoch: int = 0, object_counts: Sequence[int] = (0, 1, 2, 3),
                 object_probs: Sequence[float] = (0.4, 0.475, 0.1, 0.025), force_non_empty: bool = False,
                 placement_tries: int = 3, mask_base_img: bool = False, different_shapes: bool = False,
                 use_ref: bool = True, noise: dict[str, Any] | None = None,
                 object_augmentations: Sequence[dict[str, Any]] | None = None,
                 base_augmentations: Sequence[dict[str, Any]] | None = None) -> None:
        root = Path(prepared_dir)
        self.base = JsonLineDataset(root / "base_dataset")
        self.ref = JsonLineDataset(root / "tile_train_set")
        self.objects = [JsonLineDataset(root / "object_datasets" / f"object_dataset_{c}") for c in range(num_classes)]
        empty = [c for c, d in enumerate(self.objects) if len(d) == 0]
        if len(self.base) == 0 or len(self.ref) == 0 or empty:
            raise DataError(f"{root} cannot feed COIGAN: {len(self.base)} base tiles, {len(self.ref)} reference tiles, no "
                            f"objects of classes {empty} (0-based) in the training split. Use more images, a larger "
                            "data.init_args.train_ratio, or fewer classes (data.init_args.num_classes).")
        self.image_size, self.num_classes, self.length = image_size, num_classes, length
        self.seed, self.rank, self.epoch = seed, rank, epoch
        self.counts, self.probs = tuple(object_counts), tuple(object_probs)
        draw_count(np.random.default_rng(0), self.counts, self.probs)  # validates the distribution early
        self.force_non_empty, self.tries = force_non_empty, placement_tries
        self.mask_base_img, self.different_shapes, self.use_ref = mask_base_img, different_shapes, use_ref
        self.noise = build_noise(noise)
        self.object_aug = build_pipeline(object_augmentations)
        self.base_aug = build_pipeline(base_augmentations)

    # ---- streams ------------------------------------------------------------------------------------

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def start(self, worker: int = 0) -> dict[str, Any]:
        """The random state of one stream: numpy RNG, torch generator, per-source index streams, seeded augmentations."""
        ss = stream_seed(self.seed, self.rank, worker, self.epoch)
        rng = np.random.default_rng(ss)
        gen = torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        for pipeline, aug_seed in zip((self.object_aug, self.base_aug), ss.spawn(2)):
            if pipeline is not None:
                pipeline.set_random_seed(int(aug_seed.generate_state(1)[0]))
        return {"rng": rng, "gen": gen, "base": IndexStream(len(self.base), rng), "ref": IndexStream(len(self.ref), rng),
                "objects": [IndexStream(len(d), rng) for d in self.objects],
                "shapes": [IndexStream(len(d), rng) for d in self.objects]}

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        worker, workers = self._worker()
        share = self.length // workers + (worker < self.length % workers)
        state = self.start(worker)
        for _ in range(share):
            yield self.sample(state)

    # ---- one sample ---------------------------------------------------------------------------------

    def _tile(self, data: JsonLineDataset, index: int) -> np.ndarray:
        image = read_rgb(data.path(data[index]))
        if self.base_aug is not None:
            image = self.base_aug(image=image)["image"]
        if image.shape[:2] != (self.image_size, self.image_size):
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return image

    def _object(self, c: int, index: int, with_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
        data = self.objects[c]
        record = data[index]
        mask = polygons_to_mask([np.asarray(p) for p in record["points"]], tuple(record["shape"]))
        image = read_rgb(data.path(record)) if with_image else None
        if image is not None and image.shape[:2] != mask.shape:
            raise ValueError(f"{data.path(record)} is {image.shape[:2]}, its record says {mask.shape}; rerun prepare --force.")
        if self.object_aug is not None:
            if image is None:
                image = np.zeros((*mask.shape, 3), dtype=np.uint8)
                mask = self.object_aug(image=image, mask=mask)["mask"]
                image = None
            else:
                out = self.object_aug(image=image, mask=mask)
                image, mask = out["image"], out["mask"]
        return image, mask

    def _place(self, state: dict[str, Any], with_images: bool) -> tuple[np.ndarray, np.ndarray]:
        """Place objects of every class (in a random order) on one shared avoid-mask: (N, S, S, 3) pixels, (N, S, S) masks."""
        S, N, rng = self.image_size, self.num_classes, state["rng"]
        pixels = np.zeros((N, S, S, 3), dtype=np.uint8)
        masks = np.zeros((N, S, S), dtype=bool)
        avoid = np.zeros((S, S), dtype=bool)
        streams = state["objects" if with_images else "shapes"]
        order = rng.permutation(N)
        for position, c in enumerate(order):
            last = position == N - 1
            force = self.force_non_empty and last and not avoid.any()
            for _ in range(draw_count(rng, self.counts, self.probs, force_non_empty=force)):
                image, mask = self._object(int(c), streams[c].next(), with_images)
                place_object(pixels[c] if with_images else None, masks[c], avoid, image, mask, rng, self.tries)
        return pixels, masks

    def sample(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Draw one sample dict from a stream state (see ``start``)."""
        base = self._tile(self.base, state["base"].next())
        pixels, masks = self._place(state, with_images=True)
        gen_masks = self._place(state, with_images=False)[1] if self.different_shapes else masks
        masks_t = torch.from_numpy(gen_masks.astype(np.float32))
        union = masks_t.amax(0)
        base_t = torch.from_numpy(base).permute(2, 0, 1).float() / 255.0
        gen_base = base_t * (1 - union) if self.mask_base_img else base_t
        noised = self.noise(masks_t, generator=state["gen"]).clamp(0, 1) if masks_t.any() else masks_t
        disc = torch.from_numpy(pixels).permute(0, 3, 1, 2).reshape(-1, self.image_size, self.image_size).float() / 255.0
        out = {"base": base_t, "gen_input": torch.cat([gen_base, noised]), "disc_input": disc,
               "orig_gen_input_masks": masks_t, "gen_input_union_mask": union}
        if self.use_ref:
            out["ref"] = torch.from_numpy(self._tile(self.ref, state["ref"].next())).permute(2, 0, 1).float() / 255.0
        return out
