"""The benchmark scripts' sample cache: drawn once, re-scored from the file, refused when the settings differ."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import cached_samples


def test_cached_samples_draws_once_and_refuses_other_settings(tmp_path):
    calls = []

    def draw():
        calls.append(1)
        return torch.full((4, 1, 2, 2), float(len(calls))), 100.0

    path, settings = tmp_path / "row.pt", {"sampling": {"steps": 100, "guidance_scale": 1.0}, "weights": "ema"}
    first, nfe, seconds = cached_samples(path, settings, draw)
    again, nfe_again, seconds_again = cached_samples(path, settings, draw)
    assert len(calls) == 1 and torch.equal(first, again) and (nfe, seconds) == (nfe_again, seconds_again) == (100.0, seconds)
    with pytest.raises(SystemExit, match="holds samples drawn with"):
        cached_samples(path, {**settings, "weights": "raw"}, draw)
    cached_samples(None, settings, draw)  # no file: draws every time
    assert len(calls) == 2
