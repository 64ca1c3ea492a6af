"""The training-seed sweep benchmark: job order, its statistics, and a real two-variant sweep on tiny models that
trains, scores, records, and never overwrites an earlier run."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_cli
from test_cpu_recipe_quality import TINY_FEATURES, on_mnist
from test_datamodules import make_fake_mnist

from benchmarks.recipe_seed_sweep import (Job, check_budget, guidance_of, parse_variants, score_command, summarise,
                                          unknown_rows)

SWEEP = ROOT / "benchmarks" / "recipe_seed_sweep.py"


def test_jobs_run_seed_major_with_each_variants_own_seeds_and_overrides():
    jobs = parse_variants([["recipe", ""], ["wide", "--model.init_args.p_uncond 0.2", "2,7"]], seeds=[1, 2])
    assert [(j.variant, j.seed) for j in jobs] == [("recipe", 1), ("recipe", 2), ("wide", 2), ("wide", 7)]
    assert jobs[2].overrides == ["--model.init_args.p_uncond", "0.2"] and jobs[0].overrides == []
    assert jobs[3].run_name == "sweep_wide_s7"
    with pytest.raises(SystemExit, match="names the run folder"):
        parse_variants([["p/0.2", ""]], seeds=[1])
    with pytest.raises(SystemExit, match="NAME ARGS"):
        parse_variants([["lonely"]], seeds=[1])


def test_summary_is_the_mean_and_sample_deviation_over_seeds():
    jobs = [Job("a", s, [], rows={"r": {"fid": f, "kid": k, "legible": g}})
            for s, f, k, g in ((1, 0.4, 0.001, 0.7), (2, 0.6, 0.003, 0.8), (3, 0.5, 0.002, 0.9))]
    s = summarise(jobs + [Job("b", 1, [], rows={"r": {"fid": 1.0, "kid": 0.0, "legible": 0.5}})])
    assert s["a"]["r"]["seeds"] == [1, 2, 3]
    assert s["a"]["r"]["fid_mean"] == pytest.approx(0.5) and s["a"]["r"]["fid_sd"] == pytest.approx(0.1)
    assert s["a"]["r"]["legible_sd"] == pytest.approx(statistics.stdev([0.7, 0.8, 0.9]))
    assert s["b"]["r"]["fid_mean"] == 1.0 and s["b"]["r"]["fid_sd"] is None  # one seed has no spread


def test_autoguided_rows_are_scored_with_the_jobs_own_guide(tmp_path):
    def args(rows, **kw):
        return argparse.Namespace(config="c.yaml", features="f.ckpt", judge=kw.get("judge"), rows=rows,
                                  groups=kw.get("groups", "ancestral"), num_samples=10,
                                  extra_reference=kw.get("extra_reference"))

    run_dir = tmp_path / "sweep_a_s1"
    (run_dir / "checkpoints").mkdir(parents=True)
    plain = score_command(args("ddpm100-w0.75"), run_dir, "cpu", tmp_path / "cache", tmp_path / "q.json")
    assert "--guide" not in plain and "--judge" not in plain and "--extra-reference" not in plain
    assert plain[plain.index("--ckpt") + 1] == str(run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(RuntimeError, match="GuideSnapshot"):  # an autoguided row without the run's snapshot
        score_command(args("ddpm100-w1.5-autoguide"), run_dir, "cpu", tmp_path / "cache", tmp_path / "q.json")
    (run_dir / "checkpoints" / "guide.ckpt").write_bytes(b"")
    cmd = score_command(args("ddpm100-w0,ddpm100-w1.5-autoguide", judge="j.ckpt", groups="ancestral,autoguidance",
                             extra_reference="npm"), run_dir, "cpu", tmp_path / "cache", tmp_path / "q.json")
    assert cmd[cmd.index("--guide") + 1] == str(run_dir / "checkpoints" / "guide.ckpt")
    assert cmd[cmd.index("--groups") + 1] == "ancestral,autoguidance"
    assert cmd[cmd.index("--judge") + 1] == "j.ckpt" and cmd[cmd.index("--extra-reference") + 1] == "npm"


def test_a_run_cut_short_of_its_step_budget_is_refused(tmp_path):
    run_dir = tmp_path / "sweep_a_s1"
    with pytest.raises(RuntimeError, match="wrote no .*last.ckpt"):
        check_budget(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 1626}, run_dir / "checkpoints" / "last.ckpt")
    assert check_budget(run_dir) == 1626  # no saved config: no budget to hold it to
    saved = run_dir / "lightning_logs" / "version_0"
    saved.mkdir(parents=True)
    (saved / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 1800, "max_time": None}}))
    with pytest.raises(RuntimeError, match="trained 1,626 of its 1,800 steps.*not scored"):
        check_budget(run_dir)
    torch.save({"global_step": 1800}, run_dir / "checkpoints" / "last.ckpt")
    assert check_budget(run_dir) == 1800
    (saved / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": -1, "max_epochs": 3}}))
    assert check_budget(run_dir) == 1800  # an epoch budget is not checked


def test_rows_the_groups_lack_are_refused_before_any_training(tmp_path, monkeypatch):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"sampling": {"guidance_scale": 0.75}}))
    assert guidance_of(str(config), []) == 0.75
    assert guidance_of(str(config), ["--sampling.guidance_scale", "0.5"]) == 0.5
    assert guidance_of(str(config), ["--sampling.guidance_scale=2"]) == 2.0
    (tmp_path / "bare.yaml").write_text("model: {}\n")
    assert guidance_of(str(tmp_path / "bare.yaml"), []) == 1.0
    # ddpm200-w<w> is named by the weight; an autoguided row needs its group
    assert unknown_rows(["ddpm100-w0.5", "ddpm200-w0.75"], ["ancestral"], {0.75}) == []
    assert unknown_rows(["ddpm200-w0.75", "ddpm100-w1.5-autoguide"], ["ancestral"], {0.5}) == [
        "ddpm200-w0.75", "ddpm100-w1.5-autoguide"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["recipe_seed_sweep.py", "--config", str(config), "--features", "f.ckpt",
                                      "--rows", "ddpm100-w0.5,ddpm100-w1.5-autoguide", "--variant", "a", "",
                                      "--out", "sweep.json"])
    from benchmarks import recipe_seed_sweep
    with pytest.raises(SystemExit, match="ddpm100-w1.5-autoguide: --groups ancestral has no such row.*Nothing"):
        recipe_seed_sweep.main()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweep.json").exists()


@pytest.mark.slow
def test_a_two_variant_sweep_trains_scores_and_keeps_earlier_runs(tmp_path, monkeypatch):
    make_fake_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=48, n_test=30)
    run_cli("fit", "--config", str(on_mnist(TINY_FEATURES, tmp_path / "features.yaml")), "--trainer.max_epochs", "1")
    config = on_mnist(TINY, tmp_path / "ddpm.yaml", num_timesteps=100)
    tiny = yaml.safe_load(config.read_text())  # checkpoints under each job's own folder, as in the CPU recipes
    tiny["trainer"]["callbacks"] = [c for c in tiny["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
    tiny["trainer"]["callbacks"].append({"class_path": "callbacks.LastCheckpoint"})
    config.write_text(yaml.safe_dump(tiny))
    features = tmp_path / "features" / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, str(SWEEP), "--config", str(config), "--features", str(features), "--seeds", "3",
           "--variant", "base", "", "--variant", "drop", "--model.init_args.p_uncond 0.5",
           "--variant", "short", "--trainer.max_steps 100000 --trainer.max_time 00:00:00:01", "--num-samples", "10",
           "--rows", "ddpm100-w0", "--out", "sweep.json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "sweep.json").read_text())
    jobs = {j["variant"]: j for j in result["jobs"]}
    assert [j["status"] for j in result["jobs"]] == ["done", "done", "failed"], [j["error"] for j in result["jobs"]]
    assert "of its 100,000 steps" in jobs["short"]["error"] and "short" not in result["summary"]  # cut short: unscored
    assert jobs["base"]["train_steps"] == jobs["drop"]["train_steps"] > 0
    assert jobs["base"]["checkpoint_sha256"] != jobs["drop"]["checkpoint_sha256"]  # the override changed training
    for variant in ("base", "drop"):
        row = result["summary"][variant]["ddpm100-w0"]
        assert row["seeds"] == [3] and row["fid_mean"] >= 0.0 and 0.0 <= row["legible_mean"] <= 1.0
        assert (tmp_path / "runs" / f"sweep_{variant}_s3" / "checkpoints" / "last.ckpt").is_file()

    ckpt = tmp_path / "runs" / "sweep_base_s3" / "checkpoints" / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    again = subprocess.run(cmd[:-1] + ["again.json"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    statuses = [(j["status"], j["error"]) for j in json.loads((tmp_path / "again.json").read_text())["jobs"]]
    assert all(s == "failed" and "already holds files" in e for s, e in statuses)
    assert ckpt.stat().st_mtime_ns == before

    late = subprocess.run(cmd[:-1] + ["late.json", "--deadline-s", "0"], capture_output=True, text=True, timeout=120)
    assert [j["status"] for j in json.loads((tmp_path / "late.json").read_text())["jobs"]] == ["skipped: deadline"] * 3
    assert late.returncode == 0
