"""Start-up cost of the CLI: wall time of ``cli.py fit --help`` and of a config error, against the bare imports
it cannot avoid (torch, lightning). Runs are interleaved so a busy machine slows all alike; medians reported.

    python benchmarks/startup_time.py --repos . --out docs/benchmarks/startup_time_cpu.json
    python benchmarks/startup_time.py --repos /path/to/old/checkout . --out ...    # before/after
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning.pytorch": [sys.executable, "-c", "import lightning.pytorch"],
    "import cli": [sys.executable, "-c", "import cli"],
    "cli.py fit --help": [sys.executable, "cli.py", "fit", "--help"],
    "cli.py fit, unknown key (config error)": [sys.executable, "cli.py", "fit", "--config", "sweeps/ddpm_mnist_cpu.yaml",
                                               "--trainer.max_stepz", "5"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", nargs="+", default=["."], help="checkouts to time (e.g. an old commit and this one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    env = {**os.environ, "WANDB_MODE": "disabled"}
    times: dict[str, dict[str, list[float]]] = {repo: {name: [] for name in COMMANDS} for repo in args.repos}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            for repo in args.repos:
                start = time.perf_counter()
                subprocess.run(cmd, cwd=repo, env={**env, "PYTHONPATH": str(Path(repo).resolve())},
                               capture_output=True, timeout=600)
                times[repo][name].append(time.perf_counter() - start)
    rows = {repo: {name: {"median_s": statistics.median(v), "runs_s": v} for name, v in per.items()}
            for repo, per in times.items()}
    for repo, per in rows.items():
        print(repo)
        for name, r in per.items():
            print(f"  {name:45s} {r['median_s']:6.2f} s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    write_result(args.out, {"what": "CLI start-up time (median wall seconds)", "command": " ".join(sys.argv),
                            "repeats": args.repeats, "load_average_1min_at_end": load, "results": rows,
                            "hardware": hardware()})


if __name__ == "__main__":
    main()
