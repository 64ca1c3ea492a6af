"""Shared fixtures: W&B off, each test in its own working directory, helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_ddpm.yaml"
TINY_VAE = ROOT / "tests" / "configs" / "tiny_vae.yaml"
TINY_DVAE = ROOT / "tests" / "configs" / "tiny_diffuse_vae.yaml"
SWEEPS = ROOT / "sweeps"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """WANDB_MODE=disabled and cwd = tmp_path, so relative run dirs in configs land in the temp dir."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    yield


def run_cli(*args: str):
    """Run ``cli.py`` in-process and return the LightningCLI object."""
    from cli import cli_main

    return cli_main(list(args))


def run_cli_subprocess(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python cli.py ...`` in a fresh process (needed for real multi-process DDP)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """A state dict with the FID Inception's exact architecture and random weights (no download)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save({}, path)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    torch.save(net.state_dict(), path)
    return path
