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
    """Name -> task, in the order ``tailwise bench all`` runs them (modules imported on demand)."""
    return {name: importlib.import_module(f"{__name__}.{name}").TASK for name in _TASK_MODULES}
