"""Builds each trial's complete config file: the base config + fixed overrides + sampled parameters,
with its own run directory, checkpoint folder and W&B run (grouped by study); checks search paths
against the base config before any trial runs."""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

# Top-level keys of `cli.py fit` besides trainer/model/data; a config may leave them out.
CLI_TOP_LEVEL = ("seed_everything", "ckpt_path", "optimizer", "lr_scheduler", "generation_metrics", "sampling",
                 "predict_dir", "run_name")


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


def _init_params(cls: type) -> set[str] | None:
    """The keyword arguments jsonargparse accepts for ``cls``: its ``__init__`` parameters, following
    ``**kwargs`` up the MRO as jsonargparse does; None when ``**kwargs`` reaches ``object`` (anything goes)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            return None
        if "__init__" not in vars(klass):
            continue
        try:
            params = list(inspect.signature(klass.__init__).parameters.values())
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _class_of(class_path: Any) -> type | None:
    """The class a ``class_path`` names, or None when it cannot be imported here (then it is not checked)."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _did_you_mean(key: str, options: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=3)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def path_problem(config: dict, path: str) -> str | None:
    """Why the dotted ``path`` reaches no setting of ``config``, or None when it does.

    Keys are checked where the schema is known: the top level, ``trainer`` (the Trainer's arguments), a
    ``class_path`` section, and the ``init_args`` of a class that imports here. A key the config leaves out
    still counts when that schema takes it (a default not written down); below it, and inside free-form
    sections, the path is not checked further."""
    from lightning.pytorch import Trainer

    keys = path.split(".")
    node: Any = config
    allowed: set[str] | None = {*config, *CLI_TOP_LEVEL, "trainer", "model", "data"}
    owner: str | None = None  # the class whose arguments `node` holds
    for i, key in enumerate(keys):
        where = ".".join(keys[:i])
        if isinstance(node, list):
            return (f"'{where}' is a list, and search paths cannot index into lists (setting one would replace the "
                    "whole list): search the list as one categorical value, or the argument of a class instead")
        if not isinstance(node, dict):
            return f"'{where}' is a value ({node!r}), not a section"
        if allowed is not None and key not in allowed:
            hint = _did_you_mean(key, allowed)
            if i == 0:
                return f"the base config has no top-level '{key}'{hint}"
            if owner:
                return f"'{where}' ({owner}) has no argument '{key}'{hint}"
            return f"'{where}' has no key '{key}': a class section takes class_path and init_args{hint}"
        child = node.get(key, {})
        if i == 0 and key == "trainer":
            allowed, owner = _init_params(Trainer), "Trainer"
        elif key == "init_args" and "class_path" in node:
            cls = _class_of(node["class_path"])
            allowed, owner = (_init_params(cls), cls.__name__) if cls else (None, None)
        elif isinstance(child, dict) and "class_path" in child:
            allowed, owner = {"class_path", "init_args", "dict_kwargs"}, None
        elif key not in node:
            return None  # a default the config leaves out: its inside is not checked
        else:
            allowed, owner = None, None
        node = child
    return None


def relocate(config: dict, run_dir: Path, name: str, group: str, job_type: str,
             wandb_config: dict[str, Any] | None = None) -> dict:
    """Point every output of ``config`` (root dir, checkpoint folders, callback save dirs, W&B files) into
    ``run_dir`` and name its W&B run ``name``, so the run never writes into the base config's folders."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    for cb in trainer.get("callbacks") or []:
        if not isinstance(cb, dict):
            continue
        init_args = cb.get("init_args") or {}
        if cb.get("class_path", "").endswith("ModelCheckpoint") or init_args.get("dirpath"):
            cb.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
        if init_args.get("save_dir"):
            init_args["save_dir"] = str(run_dir / Path(init_args["save_dir"]).name)
    for logger in _loggers(trainer):
        args = logger.setdefault("init_args", {})
        if "save_dir" in args or "Wandb" in logger.get("class_path", ""):
            args["save_dir"] = str(run_dir)
        if "Wandb" in logger.get("class_path", ""):
            for key in ("id", "version", "resume"):
                args.pop(key, None)
            args.update(name=name, group=group, job_type=job_type)
            if wandb_config:
                args["config"] = wandb_config
    return config


def trial_config(base: dict, overrides: dict[str, Any], run_dir: Path, study_name: str, number: int,
                 params: dict[str, Any]) -> dict:
    """A runnable config whose outputs all land in ``run_dir``, never in the base run's folders; its
    ``tuning.trial.OptunaTrial`` callback reports to the study."""
    config = relocate(apply_params(base, overrides), run_dir, f"{study_name}-trial-{number:03d}", study_name,
                      "optuna-trial", {"optuna": {"study": study_name, "trial": number, "params": params}})
    trainer = config["trainer"]
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), {"class_path": "tuning.trial.OptunaTrial"}]
    return config


def best_config(base: dict, params: dict[str, Any], run_dir: Path, study_name: str, number: int) -> dict:
    """The base config with the best trial's parameters, running into ``run_dir`` as W&B run
    ``<study>-best`` (group ``<study>``), so fitting it touches neither the base run nor any trial."""
    return relocate(apply_params(base, params), run_dir, f"{study_name}-best", study_name, "optuna-best",
                    {"optuna": {"study": study_name, "best_trial": number, "params": params}})


def dump(config: dict, path: Path, header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)
