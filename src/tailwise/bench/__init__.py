"""``tailwise bench``: compare losses on a task and report which one helps the tail.

Task modules register here; see :mod:`tailwise.bench.task` for the contract.
"""

from __future__ import annotations

import importlib
from typing import Dict

from .task import BenchInputError, BenchTask

__all__ = ["BenchTask", "BenchInputError", "available_tasks", "DEFAULT_TASKS"]

_TASK_MODULES = ("classification", "regression", "boxes", "ranking")
# what `tailwise bench` runs when no task is named (the 60-second default); `all` runs every task
DEFAULT_TASKS = ("classification", "regression", "boxes")


def available_tasks() -> Dict[str, BenchTask]:
    """Name -> task for every task module that exists (a module is skipped until it is written)."""
    tasks = {}
    for name in _TASK_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        tasks[name] = module.TASK
    return tasks
