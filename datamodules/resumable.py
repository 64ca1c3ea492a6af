"""A training loader whose position inside an epoch survives a checkpoint, for exact resume.

The shuffle of epoch e is a function of (seed, e) only, and the worker seeds of epoch e come from a
generator seeded the same way, so a resumed run sees the same batches as the uninterrupted one. Lightning
saves ``state_dict()`` of every stateful training loader in the checkpoint and calls ``load_state_dict()``
before the loader's first iterator is made; the loader then skips the batches the run already trained on
in that epoch, without loading them.

``ResumableSampler`` is a ``DistributedSampler``, so under DDP Lightning keeps it (it only replaces
non-distributed samplers) and every rank skips its own share.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle (``DistributedSampler``'s) that can start ``skip`` samples into the epoch.

    ``skip`` applies to the next iteration only; the epoch after that starts at its beginning.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.skip = self.skip, 0
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """``DataLoader`` over a ``ResumableSampler`` with Lightning's stateful-loader interface.

    The state is ``{"epoch", "batches"}``: the epoch being trained and how many of its batches entered a
    training step. The datamodule counts them (``mark_trained`` from ``on_before_batch_transfer``), because
    the loader itself cannot tell a batch that was trained on from one Lightning's fetcher drew ahead.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                 num_workers: int = 0, pin_memory: bool = False, drop_last: bool = True,
                 sampler: Optional[ResumableSampler] = None, **kwargs: Any) -> None:
        sampler = sampler or ResumableSampler(dataset, seed, num_replicas, rank, shuffle=True, drop_last=drop_last)
        kwargs.pop("shuffle", None)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                         drop_last=drop_last, persistent_workers=False, **kwargs)
        self.seed = seed
        self.trained = 0
        self.epoch_batches: Optional[int] = None  # batches per epoch when the trainer limits them

    def __iter__(self) -> Iterator[Any]:
        # worker seeds of epoch e come from (seed, e), not from the global RNG at whatever point iter() runs
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.sampler.epoch)
        self.trained = self.sampler.skip // self.batch_size
        return super().__iter__()

    def mark_trained(self, epoch_batches: Optional[int] = None) -> None:
        """One more batch of this epoch entered a training step (``epoch_batches``: the trainer's limit)."""
        self.trained += 1
        self.epoch_batches = epoch_batches

    def state_dict(self) -> dict[str, int]:
        length = min(len(self), self.epoch_batches or len(self))
        if self.trained >= length:  # the epoch is done: a resume starts the next one
            return {"epoch": int(self.sampler.epoch) + 1, "batches": 0}
        return {"epoch": int(self.sampler.epoch), "batches": self.trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip = int(state["batches"]) * self.batch_size
