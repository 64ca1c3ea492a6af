"""Warnings a user sees before the first training step of the CPU recipe (issue #11 asks for at most 2).

Runs ``cli.py fit`` for one step in each given checkout, with W&B offline as a new user gets it, and counts
the warning lines printed before Lightning's model summary (which comes right before the first step).

    python benchmarks/warning_count.py --repos /path/to/old/checkout . --out docs/benchmarks/warning_count_cpu.json
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402

WARNING = re.compile(r"(Warning|WARNING|💡 Tip|\bwarn\()")


def warnings_before_training(repo: str, config: str) -> list[str]:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "cli.py", "fit", "--config", config, "--trainer.max_steps", "1",
               "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", runs]
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(repo).resolve())}
        env.pop("WANDB_SILENT", None)
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    text = out.stdout + out.stderr
    head = text.split("| Name", 1)[0]
    return [line.strip() for line in head.splitlines() if WARNING.search(line)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", nargs="+", default=["."])
    ap.add_argument("--config", default="sweeps/ddpm_mnist_cpu.yaml")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results = {repo: warnings_before_training(repo, args.config) for repo in args.repos}
    for repo, lines in results.items():
        print(f"{repo}: {len(lines)}")
        for line in lines:
            print("   ", line[:140])
    write_result(args.out, {"what": "warning lines before the first training step (W&B offline)",
                            "command": " ".join(sys.argv), "config": args.config,
                            "results": {repo: {"count": len(v), "lines": v} for repo, v in results.items()},
                            "hardware": hardware()})


if __name__ == "__main__":
    main()
