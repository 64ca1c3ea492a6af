"""The search-space YAML of ``cli.py tune``: parameters, objective, sampler, pruner and budget.

```yaml
study_name: ddpm_mnist                       # default: the search file's name
objective: {monitor: val/loss, direction: minimize}
n_trials: 20                                 # per tune process; null = until timeout
timeout: null                                # seconds
storage: sqlite:///runs/studies/ddpm_mnist.db
sampler: {name: tpe, seed: 2025}             # tpe | random; other keys go to the sampler
pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 1, interval_steps: 1}   # threshold | none
heartbeat: {interval: 60, grace_period: 180}  # stale (killed) trials are marked failed after this
fixed:                                        # config overrides shared by every trial
  trainer.max_epochs: 3
params:                                       # dotted config paths → distributions
  model.init_args.optimizer.init_args.lr: {type: float, low: 5.0e-5, high: 5.0e-4, log: true}
  model.init_args.schedule: {type: categorical, choices: [linear, cosine]}
  model.init_args.beta_end: {type: float, low: 0.01, high: 0.03, step: 0.002,
                             condition: {model.init_args.schedule: linear}}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

PARAM_TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """The search YAML is malformed; the message names the key and the fix."""


@dataclass
class Param:
    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    condition: dict[str, Any] = field(default_factory=dict)

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(k) == v for k, v in self.condition.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.path, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class SearchSpace:
    study_name: str
    params: list[Param]
    monitor: str = "val/loss"
    direction: str = "minimize"
    n_trials: int | None = 20
    timeout: float | None = None
    storage: str | None = None
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    heartbeat: dict[str, Any] = field(default_factory=lambda: {"interval": 60, "grace_period": 180})
    fixed: dict[str, Any] = field(default_factory=dict)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter; a conditional one only when its condition holds (in file order)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.path] = p.suggest(trial)
        return values

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        kwargs = {k: v for k, v in self.sampler.items() if k != "name"}
        name = self.sampler.get("name", "tpe")
        if name == "tpe":
            return optuna.samplers.TPESampler(**kwargs)
        if name == "random":
            return optuna.samplers.RandomSampler(**kwargs)
        raise SearchSpaceError(f"sampler.name {name!r} is not supported: use tpe or random.")

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner)


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner is not stored in the study's database, so trial processes rebuild it from this spec."""
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    name = spec.get("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "threshold":  # prune any trial whose value leaves [lower, upper], e.g. diverging losses
        return optuna.pruners.ThresholdPruner(**kwargs)
    if name in ("none", None):
        return optuna.pruners.NopPruner()
    raise SearchSpaceError(f"pruner.name {name!r} is not supported: use median, threshold or none.")


def _param(path: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise SearchSpaceError(f"params.{path}: give a mapping with type one of {PARAM_TYPES}, got {spec!r}.")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "condition"}
    if unknown:
        raise SearchSpaceError(f"params.{path}: unknown keys {sorted(unknown)}.")
    p = Param(path=path, **spec)
    if p.type == "categorical":
        if not p.choices:
            raise SearchSpaceError(f"params.{path}: a categorical parameter needs a non-empty choices list.")
    else:
        if p.low is None or p.high is None or not float(p.low) < float(p.high):
            raise SearchSpaceError(f"params.{path}: {p.type} needs low < high, got low={p.low}, high={p.high}.")
        if p.log and p.step:
            raise SearchSpaceError(f"params.{path}: log and step cannot be combined (Optuna's rule).")
        if p.log and float(p.low) <= 0:
            raise SearchSpaceError(f"params.{path}: log scale needs low > 0.")
    return p


def load_search_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"Search file {str(path)!r} does not exist (see sweeps/*.search.yaml for examples).")
    raw = yaml.safe_load(path.read_text()) or {}
    allowed = {"study_name", "objective", "n_trials", "timeout", "storage", "sampler", "pruner", "heartbeat", "fixed", "params"}
    unknown = set(raw) - allowed
    if unknown:
        raise SearchSpaceError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
    if not raw.get("params"):
        raise SearchSpaceError(f"{path}: no params to search.")
    params = [_param(k, v) for k, v in raw["params"].items()]
    names = {p.path for p in params}
    for p in params:
        missing = set(p.condition) - names
        if missing:
            raise SearchSpaceError(f"params.{p.path}: condition on {sorted(missing)}, which are not parameters.")
    objective = raw.get("objective") or {}
    direction = objective.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise SearchSpaceError(f"objective.direction must be minimize or maximize, got {direction!r}.")
    return SearchSpace(
        study_name=raw.get("study_name") or path.name.removesuffix(".yaml").removesuffix(".search"),
        params=params,
        monitor=objective.get("monitor", "val/loss"),
        direction=direction,
        n_trials=raw.get("n_trials", 20),
        timeout=raw.get("timeout"),
        storage=raw.get("storage"),
        sampler=raw.get("sampler") or {"name": "tpe"},
        pruner=raw.get("pruner") or {"name": "median"},
        heartbeat=raw.get("heartbeat") or {"interval": 60, "grace_period": 180},
        fixed=raw.get("fixed") or {},
    )
