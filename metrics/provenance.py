"""What a number was measured on: software versions, hardware, date and the code's git commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch


# Environment variables that select CPU kernels or their threading, and so the rounding of trained weights: set
# ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 machine to reproduce an AVX2 machine's runs.
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")


def hardware() -> dict:
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_family_model": _cpu_field("cpu family") + "/" + _cpu_field("model"),
        # The SIMD path of torch's CPU kernels: trained weights and samples match bit for bit only on the same one
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def software() -> dict:
    import torchmetrics

    info = {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__, "genlab_commit": git_commit()}
    try:
        import torch_fidelity

        info["torch_fidelity"] = torch_fidelity.__version__
    except ImportError:
        pass
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_of(path: str | os.PathLike | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _cpu_field(key: str) -> str:
    """The first ``key : value`` of /proc/cpuinfo ("" where there is none, as off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


def _cpu_name() -> str:
    return _cpu_field("model name") or platform.processor() or platform.machine()
