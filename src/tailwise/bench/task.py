"""The contract between ``tailwise bench`` and each benchmark task.

A task module (``tailwise/bench/<name>.py``) defines a module-level ``TASK = BenchTask(...)``.
The runner (:mod:`tailwise.bench.runner`) owns everything shared: planning, skipping runs already
in ``results.jsonl``, the progress bar, appending and flushing one JSON line per finished run,
and assembling ``report.md``. A task only says what its runs are, how to execute one, and how to
summarise finished records.

* ``plan(args) -> list[dict]``: one JSON-serialisable *spec* per run. Every spec has ``"task"``,
  ``"loss"`` and ``"seed"`` plus whatever else identifies the run (dataset, epochs, ...). Two
  specs that are equal are the same run, which is what makes re-running resumable.
  An optional ``"label"`` names the run's row in the progress bar and report (e.g.
  ``cross_entropy + class_balanced sampler``); ``"device"`` records where it runs.
* ``execute(spec, args) -> dict``: runs one spec and returns its metrics (JSON-serialisable;
  floats, ints, strings, lists; NaN/inf are stored as null). It must be deterministic for the
  spec's seed. It may call ``args.bench_estimate(task_name, seconds_per_run, basis)`` once it
  has timed a first step or epoch, so the runner can print the time the remaining runs need.
* ``report(records, args, out_dir) -> str``: a markdown section (tables, recommendation) from
  the finished records of this task; may write PNG figures into ``out_dir`` and link them.
* ``add_arguments(parser)``: optional task-specific command-line options.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

__all__ = ["BenchTask", "BenchInputError"]


class BenchInputError(Exception):
    """A user error (missing file, bad CSV, ...): the CLI prints one line and exits non-zero."""


@dataclass(frozen=True)
class BenchTask:
    name: str
    help: str
    plan: Callable[[argparse.Namespace], List[Dict]]
    execute: Callable[[Dict, argparse.Namespace], Dict]
    report: Callable[[List[Dict], argparse.Namespace, Path], str]
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
