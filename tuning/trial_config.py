"""Builds each trial's complete config file: the base config + fixed overrides + sampled parameters,
with its own run directory, checkpoint folder and W&B run (grouped by study)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def expand_blocks(config: dict, base_dir: Path) -> dict:
    """Replace top-level values that are paths to YAML blocks (``model: blocks/x.yaml``, relative to the
    config file, as jsonargparse reads them) by the blocks' contents, so dotted search paths reach inside."""
    out = dict(config)
    for key, value in config.items():
        if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (base_dir / value).is_file():
            out[key] = yaml.safe_load((base_dir / value).read_text()) or {}
    return out


def load_configs(paths: list[str]) -> dict:
    config: dict = {}
    for path in paths:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        config = deep_merge(config, expand_blocks(loaded, Path(path).resolve().parent))
    return config


def set_dotted(config: dict, path: str, value: Any) -> None:
    """``model.init_args.optimizer.init_args.lr`` → config["model"]["init_args"]["optimizer"]["init_args"]["lr"]."""
    keys = path.split(".")
    node = config
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _loggers(trainer: dict) -> list[dict]:
    logger = trainer.get("logger")
    if isinstance(logger, dict):
        return [logger]
    return [lg for lg in logger if isinstance(lg, dict)] if isinstance(logger, list) else []


def apply_params(base: dict, overrides: dict[str, Any]) -> dict:
    config = copy.deepcopy(base)
    for path, value in overrides.items():
        set_dotted(config, path, value)
    return config


def trial_config(base: dict, overrides: dict[str, Any], run_dir: Path, study_name: str, number: int,
                 params: dict[str, Any]) -> dict:
    """A runnable config whose outputs all land in ``run_dir``, never in the base run's folders; its
    ``tuning.trial.OptunaTrial`` callback reports to the study."""
    config = apply_params(base, overrides)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), {"class_path": "tuning.trial.OptunaTrial"}]
    for cb in trainer.get("callbacks") or []:
        if isinstance(cb, dict) and cb.get("class_path", "").endswith("ModelCheckpoint"):
            cb.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
        for key in ("save_dir",):
            if isinstance(cb, dict) and key in (cb.get("init_args") or {}):
                cb["init_args"][key] = str(run_dir / Path(cb["init_args"][key]).name)
    for logger in _loggers(trainer):
        args = logger.setdefault("init_args", {})
        if "save_dir" in args or "Wandb" in logger.get("class_path", ""):
            args["save_dir"] = str(run_dir)
        if "Wandb" in logger.get("class_path", ""):
            for key in ("id", "version", "resume"):
                args.pop(key, None)
            args.update(name=f"{study_name}-trial-{number:03d}", group=study_name, job_type="optuna-trial",
                        config={"optuna": {"study": study_name, "trial": number, "params": params}})
    return config


def dump(config: dict, path: Path, header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)
