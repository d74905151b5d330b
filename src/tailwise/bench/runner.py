"""Run benchmark tasks resumably: one flushed JSON line per finished run, then ``report.md``.

``results.jsonl`` is the single source of truth. Each finished run is appended, flushed and
fsync'ed before the next one starts, so killing the process (even with SIGKILL) loses at most
the run in progress; re-running the same command with the same ``--out`` skips every run whose
spec is already recorded and only then rebuilds the report from all records.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

from .task import BenchTask

__all__ = ["run_tasks", "load_records", "run_id", "default_out_dir"]

RESULTS = "results.jsonl"
REPORT = "report.md"


def run_id(spec: Dict) -> str:
    """The identity of a run: its spec as canonical JSON."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def default_out_dir() -> Path:
    return Path("tailwise-bench") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _repair_tail(path: Path) -> None:
    """Drop a partial last line (the process died while writing it) so appends stay line-aligned."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)


def load_records(path: Path) -> List[Dict]:
    """Every complete JSON record in ``path`` (unparseable lines are skipped)."""
    records = []
    if not Path(path).exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "run_id" in rec:
                records.append(rec)
    return records


class _Progress:
    """tqdm when installed (the ``bench`` extra), else one line per run on stderr."""

    def __init__(self, total: int, initial: int, quiet: bool):
        self.quiet = quiet
        self.total = total
        self.count = initial
        self.start = time.perf_counter()
        self.done_at_start = initial
        self.bar = None
        if quiet:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="run", dynamic_ncols=True, file=sys.stderr)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def update(self, text: str) -> None:
        self.count += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        ran = self.count - self.done_at_start
        eta = elapsed / ran * (self.total - self.count) if ran else 0.0
        print(f"[{self.count}/{self.total}] {text} (ETA {eta:.0f}s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_tasks(tasks: Sequence[BenchTask], args: argparse.Namespace) -> Path:
    """Plan, run what is missing, and write ``report.md``; returns the output directory."""
    out_dir = Path(args.out) if getattr(args, "out", None) else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS
    _repair_tail(results_path)

    planned = [(task, spec) for task in tasks for spec in task.plan(args)]
    finished = {rec["run_id"] for rec in load_records(results_path)}
    todo = [(task, spec) for task, spec in planned if run_id(spec) not in finished]
    quiet = bool(getattr(args, "quiet", False))
    if not quiet and len(todo) < len(planned):
        print(f"resuming in {out_dir}: {len(planned) - len(todo)} of {len(planned)} runs already done",
              file=sys.stderr)

    progress = _Progress(total=len(planned), initial=len(planned) - len(todo), quiet=quiet)
    try:
        with open(results_path, "a", encoding="utf-8") as f:
            for task, spec in todo:
                label = f"{task.name} {spec.get('loss')} seed={spec.get('seed')}"
                progress.describe(label)
                t0 = time.perf_counter()
                metrics = task.execute(spec, args)
                record = {**spec, **metrics, "seconds": round(time.perf_counter() - t0, 4),
                          "run_id": run_id(spec)}
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
                progress.update(label)
    finally:
        progress.close()

    planned_ids = {run_id(spec) for _, spec in planned}
    records = [r for r in load_records(results_path) if r["run_id"] in planned_ids]
    sections = ["# tailwise bench report", "",
                f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from `{RESULTS}` "
                f"({len(records)} runs).", ""]
    for task in tasks:
        mine = [r for r in records if r.get("task") == task.name]
        sections.append(task.report(mine, args, out_dir).rstrip() + "\n")
    report = "\n".join(sections)
    (out_dir / REPORT).write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
        print(f"results: {results_path}\nreport:  {out_dir / REPORT}", file=sys.stderr)
    return out_dir
