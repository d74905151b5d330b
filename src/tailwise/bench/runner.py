"""Run benchmark tasks resumably: one flushed JSON line per finished run, then ``report.md``.

``results.jsonl`` is the single source of truth. Each finished run is appended, flushed and
fsync'ed before the next one starts, so killing the process (even with SIGKILL) loses at most
the run in progress; re-running the same command with the same ``--out`` skips every run whose
spec is already recorded and only then rebuilds the report from all records.

Records are strict JSON (NaN and infinities become ``null``) and carry ``env`` (versions, GPU).
A torn last line left by a kill mid-write is detected on the next run, dropped (every complete
line is kept) and its run redone, with one line saying so. A failed write (``ENOSPC``...) is cut
back to the previous record and reported as one ``tailwise: error`` line: nothing already
written is lost, and re-running resumes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ._device import describe_environment, environment
from .task import BenchInputError, BenchTask

__all__ = ["run_tasks", "load_records", "run_id", "default_out_dir", "repair_tail", "dumps_record"]

RESULTS = "results.jsonl"
REPORT = "report.md"


def run_id(spec: Dict) -> str:
    """The identity of a run: its spec as canonical JSON."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def default_out_dir() -> Path:
    return Path("tailwise-bench") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _strict(value):
    """``value`` with every NaN/inf float replaced by None, so the JSON is strict (RFC 8259)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def dumps_record(record: Dict) -> str:
    """One strict-JSON line (no NaN/Infinity tokens: missing or non-finite values are null)."""
    return json.dumps(_strict(record), allow_nan=False)


def _parse(line: bytes):
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and "run_id" in rec else None


def repair_tail(path: Path) -> Optional[str]:
    """Make ``path`` end on a complete line; returns a one-line note of what was repaired, or None.

    A process killed in the middle of a write leaves a torn last line (no newline, cut JSON): it is
    dropped, so the run it described is redone, and every complete line is kept. A last record
    that parses but lost only its newline is kept and the newline added.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return None
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    if _parse(tail) is not None:
        with open(path, "ab") as f:
            f.write(b"\n")
        return None
    with open(path, "r+b") as f:
        f.truncate(keep)
    line_no = data[:keep].count(b"\n") + 1
    return (f"{path}: line {line_no} was torn (an interrupted write, {len(tail)} bytes); kept the "
            f"{len(load_records(path))} complete runs and will redo the torn one")


def load_records(path: Path) -> List[Dict]:
    """Every complete JSON record in ``path`` (unparseable lines are skipped)."""
    records = []
    if not Path(path).exists():
        return records
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                rec = _parse(line)  # tolerant: files written before strict JSON may hold NaN
                if rec is not None:
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

    def message(self, text: str) -> None:
        """One line on stderr that does not tear the progress bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

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


def _append(f, line: str) -> None:
    """Append one record and make it durable; on failure cut the file back to where it was, so a
    full disk never leaves a torn line behind (what was written before stays intact)."""
    data = (line + "\n").encode("utf-8")
    pos = f.tell()
    try:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    except OSError:
        try:
            f.truncate(pos)  # truncating frees space, so it works on a full disk too
            f.seek(pos)
        except OSError:
            pass  # the next run's repair_tail() drops the torn line instead
        raise


def _storage_error(exc: OSError, path: Path, kept: int) -> BenchInputError:
    what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return BenchInputError(f"{what} while writing {path}; the {kept} runs finished before are kept "
                           "intact; free space and re-run the same command to resume")


def run_tasks(tasks: Sequence[BenchTask], args: argparse.Namespace) -> Path:
    """Plan, run what is missing, and write ``report.md``; returns the output directory."""
    out_dir = Path(args.out) if getattr(args, "out", None) else default_out_dir()
    quiet = bool(getattr(args, "quiet", False))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchInputError(f"cannot create the output directory {out_dir}: {exc.strerror or exc}") from None
    results_path = out_dir / RESULTS
    note = repair_tail(results_path)
    if note:
        print(f"tailwise: {note}", file=sys.stderr, flush=True)

    planned = [(task, spec) for task in tasks for spec in task.plan(args)]
    finished = {rec["run_id"] for rec in load_records(results_path)}
    todo = [(task, spec) for task, spec in planned if run_id(spec) not in finished]
    if not quiet and len(todo) < len(planned):
        print(f"resuming in {out_dir}: {len(planned) - len(todo)} of {len(planned)} runs already done",
              file=sys.stderr)

    progress = _Progress(total=len(planned), initial=len(planned) - len(todo), quiet=quiet)
    remaining = {}
    for task, _ in todo:
        remaining[task.name] = remaining.get(task.name, 0) + 1
    announced = set()

    def estimate(task_name: str, seconds_per_run: float, basis: str) -> None:
        """Called by a task once it has timed a first step/epoch: print the time the rest needs."""
        if task_name in announced or quiet:
            return
        announced.add(task_name)
        total = seconds_per_run * remaining.get(task_name, 1)
        if total >= 30:
            progress.message(f"tailwise: estimated time for {remaining.get(task_name, 1)} {task_name} run(s): "
                             f"about {_duration(total)} ({_duration(seconds_per_run)} each, {basis})")

    args.bench_estimate = estimate
    env = environment("cuda" if any(spec.get("device") == "cuda" for _, spec in todo) else "cpu")
    written = len(finished)
    try:
        with open(results_path, "ab") as f:
            for task, spec in todo:
                label = f"{task.name} {spec.get('label', spec.get('loss'))} seed={spec.get('seed')}"
                progress.describe(label)
                t0 = time.perf_counter()
                metrics = task.execute(spec, args)
                record = {**spec, **metrics, "seconds": round(time.perf_counter() - t0, 4),
                          "env": {**env, **metrics.get("env", {})}, "run_id": run_id(spec)}
                try:
                    _append(f, dumps_record(record))
                except OSError as exc:
                    raise _storage_error(exc, results_path, written) from None
                written += 1
                remaining[task.name] -= 1
                progress.update(label)
    except OSError as exc:  # opening the file
        raise _storage_error(exc, results_path, written) from None
    finally:
        progress.close()

    planned_ids = {run_id(spec) for _, spec in planned}
    records = [r for r in load_records(results_path) if r["run_id"] in planned_ids]
    sections = ["# tailwise bench report", "",
                f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from `{RESULTS}` "
                f"({len(records)} runs; {describe_environment(records)}).", ""]
    for task in tasks:
        mine = [r for r in records if r.get("task") == task.name]
        sections.append(task.report(mine, args, out_dir).rstrip() + "\n")
    report = "\n".join(sections)
    try:
        (out_dir / REPORT).write_text(report, encoding="utf-8")
    except OSError as exc:
        raise _storage_error(exc, out_dir / REPORT, written) from None
    if not quiet:
        print(report)
        print(f"results: {results_path}\nreport:  {out_dir / REPORT}", file=sys.stderr)
    return out_dir


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
