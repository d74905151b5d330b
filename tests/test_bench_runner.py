"""The bench runner: append-and-flush records, resume, survive SIGKILL, clean CLI errors."""

import argparse
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
