"""The bench runner: append-and-flush records, resume, survive SIGKILL, clean CLI errors."""

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tailwise.bench import BenchTask
from tailwise.bench.runner import load_records, run_id, run_tasks
from tailwise.cli import main


def _make_task(calls, sleep=0.0):
    def plan(args):
        return [{"task": "toy", "loss": loss, "seed": s} for loss in ("a", "b") for s in args.seeds]

    def execute(spec, args):
        calls.append((spec["loss"], spec["seed"]))
        time.sleep(sleep)
        return {"score": float(spec["seed"]) + (0.5 if spec["loss"] == "b" else 0.0)}

    def report(records, args, out_dir):
        return f"## toy\n\n{len(records)} runs, best {max(r['score'] for r in records)}"

    return BenchTask(name="toy", help="toy", plan=plan, execute=execute, report=report)


def test_runner_writes_records_and_resumes(tmp_path):
    calls = []
    args = argparse.Namespace(out=str(tmp_path), seeds=[0, 1], quiet=True)
    run_tasks([_make_task(calls)], args)
    records = load_records(tmp_path / "results.jsonl")
    assert len(records) == 4 and len(calls) == 4
    assert {(r["loss"], r["seed"]) for r in records} == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    assert all(r["task"] == "toy" and "seconds" in r for r in records)
    report = (tmp_path / "report.md").read_text()
    assert "4 runs, best 1.5" in report

    # same command again: nothing re-runs; a new seed runs only the new specs
    run_tasks([_make_task(calls)], args)
    assert len(calls) == 4
    args.seeds = [0, 1, 2]
    run_tasks([_make_task(calls)], args)
    assert sorted(calls[4:]) == [("a", 2), ("b", 2)]
    assert len(load_records(tmp_path / "results.jsonl")) == 6


def test_runner_repairs_partial_last_line(tmp_path):
    spec = {"task": "toy", "loss": "a", "seed": 0}
    good = json.dumps({**spec, "score": 0.0, "run_id": run_id(spec)})
    (tmp_path / "results.jsonl").write_text(good + "\n" + '{"task": "toy", "loss": "b", "se')
    calls = []
    run_tasks([_make_task(calls)], argparse.Namespace(out=str(tmp_path), seeds=[0], quiet=True))
    assert calls == [("b", 0)]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


_KILL_SCRIPT = textwrap.dedent("""
    import argparse, sys, time
    sys.path.insert(0, {tests!r})
    from test_bench_runner import _make_task
    from tailwise.bench.runner import run_tasks
    calls = []
    run_tasks([_make_task(calls, sleep={sleep})], argparse.Namespace(out={out!r}, seeds=[0, 1, 2], quiet=True))
""")


def test_sigkill_loses_at_most_the_run_in_progress(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(tests=os.path.dirname(__file__), sleep=0.4, out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)])
    results = out / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if results.exists() and len(load_records(results)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = load_records(results)
    assert 2 <= len(kept) < 6, "kill should land mid-way"

    # the resumed run only executes what is missing
    script.write_text(_KILL_SCRIPT.format(tests=os.path.dirname(__file__), sleep=0.0, out=str(out)))
    subprocess.run([sys.executable, str(script)], check=True)
    final = load_records(results)
    assert len(final) == 6
    assert len({r["run_id"] for r in final}) == 6
    # every record written before the kill is still there, unchanged
    assert [r["run_id"] for r in final[:len(kept)]] == [r["run_id"] for r in kept]


def test_cli_list_and_help(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    import tailwise
    for name in tailwise.list_losses():
        assert name in out
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["bench", "--seeds", "x"], "--seeds takes a count"),
    (["bench", "--epochs", "0"], "expected a positive integer"),
])
def test_cli_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _no_constants(name):
    raise ValueError(f"non-strict JSON constant {name}")


def test_torn_last_line_is_detected_reported_and_redone(tmp_path, capsys):
    calls = []
    args = argparse.Namespace(out=str(tmp_path), seeds=[0, 1], quiet=True)
    run_tasks([_make_task(calls)], args)
    path = tmp_path / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the last record cut mid-write, no newline
    path.write_bytes(b"".join(lines[:-1]) + torn)
    lost = json.loads(lines[-1])
    calls.clear()
    capsys.readouterr()
    run_tasks([_make_task(calls)], args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "line 4 was torn" in err[0] and "kept the 3 complete runs" in err[0], err
    assert calls == [(lost["loss"], lost["seed"])]  # only the torn run is redone
    final = [json.loads(line, parse_constant=_no_constants) for line in path.read_text().splitlines()]
    assert [r["run_id"] for r in final[:3]] == [json.loads(line)["run_id"] for line in lines[:3]]
    assert len(final) == 4 and len({r["run_id"] for r in final}) == 4


def test_complete_record_missing_only_its_newline_is_kept(tmp_path, capsys):
    spec = {"task": "toy", "loss": "a", "seed": 0}
    (tmp_path / "results.jsonl").write_text(json.dumps({**spec, "score": 0.0, "run_id": run_id(spec)}))
    calls = []
    run_tasks([_make_task(calls)], argparse.Namespace(out=str(tmp_path), seeds=[0], quiet=True))
    assert calls == [("b", 0)]
    assert "torn" not in capsys.readouterr().err
    assert len(load_records(tmp_path / "results.jsonl")) == 2


def test_results_are_strict_json(tmp_path):
    def plan(args):
        return [{"task": "nan", "loss": "x", "seed": 0}]

    def execute(spec, args):
        return {"few": float("nan"), "mse": float("inf"), "curve": [1.0, float("-inf")]}

    task = BenchTask(name="nan", help="", plan=plan, execute=execute, report=lambda r, a, o: "## nan")
    run_tasks([task], argparse.Namespace(out=str(tmp_path), quiet=True))
    text = (tmp_path / "results.jsonl").read_text()
    (rec,) = [json.loads(line, parse_constant=_no_constants) for line in text.splitlines()]
    assert rec["few"] is None and rec["mse"] is None and rec["curve"] == [1.0, None]


class _FullDiskFile:
    """A results file whose third record write stores half its bytes, then fails with ENOSPC."""

    def __init__(self, f, state):
        self._f, self._state = f, state

    def write(self, data):
        self._state["writes"] += 1
        if self._state["writes"] == 3:
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_is_a_clear_error_and_loses_nothing(where, tmp_path, monkeypatch, capsys):
    import builtins

    from tailwise.bench import runner

    state = {"writes": 0, "fsyncs": 0}
    if where == "write":
        def fake_open(path, mode="r", *a, **kw):
            f = builtins.open(path, mode, *a, **kw)
            return _FullDiskFile(f, state) if str(path).endswith("results.jsonl") and "a" in mode else f
        monkeypatch.setattr(runner, "open", fake_open, raising=False)
    else:
        real_fsync = os.fsync

        def fake_fsync(fd):
            state["fsyncs"] += 1
            if state["fsyncs"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)
        monkeypatch.setattr(runner.os, "fsync", fake_fsync)
    monkeypatch.setattr(runner, "default_out_dir", lambda: tmp_path)
    monkeypatch.setattr("tailwise.bench.available_tasks", lambda: {"toy": _make_task([])})
    import tailwise.cli as cli

    args = argparse.Namespace(command="bench", task="toy", out=str(tmp_path), seeds=[0, 1], quiet=True, preset=None)
    monkeypatch.setattr(cli, "build_parser", lambda: _Parser(args))
    assert cli.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tailwise: error: no space left on device while writing"), err
    assert "the 2 runs finished before are kept intact" in err[0]
    # the two finished records are intact and the failed one left no torn bytes
    raw = (tmp_path / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n") and len(raw.splitlines()) == 2
    assert len(load_records(tmp_path / "results.jsonl")) == 2
    monkeypatch.undo()
    calls = []
    run_tasks([_make_task(calls)], argparse.Namespace(out=str(tmp_path), seeds=[0, 1], quiet=True))
    assert len(calls) == 2 and len(load_records(tmp_path / "results.jsonl")) == 4


class _Parser:
    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args
