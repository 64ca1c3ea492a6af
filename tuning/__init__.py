"""Optuna studies over ``fit`` runs: ``python cli.py tune --config ... --search ...``."""

from tuning.search_space import SearchSpace, SearchSpaceError, load_search_space

__all__ = ["SearchSpace", "SearchSpaceError", "load_search_space"]
