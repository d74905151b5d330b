"""Command line: ``tailwise bench ...``, ``tailwise list`` and ``tailwise --version``.

User errors (missing file, bad CSV, unknown loss...) print one ``tailwise: error: ...`` line on
stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional

__all__ = ["main", "build_parser", "plain_text"]


def _seeds(text: str) -> List[int]:
    """``3`` -> seeds 0, 1, 2; ``4,7`` -> seeds 4 and 7."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a comma list (0,1,2), got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds must name at least one seed")
    return seeds


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _losses(text: str) -> List[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--losses must name at least one loss")
    return names


def build_parser() -> argparse.ArgumentParser:
    from .bench import DEFAULT_TASKS, available_tasks

    tasks = available_tasks()
    parser = argparse.ArgumentParser(
        prog="tailwise",
        description="tailwise: losses and a benchmark for imbalanced and long-tailed learning.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"tailwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{bench,list}")

    task_help = "; ".join(f"{name}: {t.help}" for name, t in tasks.items())
    bench = sub.add_parser(
        "bench", help="compare losses on a task and report which one helps the tail",
        description="Run each loss over several seeds, append one JSON line per finished run to "
                    "OUT/results.jsonl (resumable: re-run with the same --out to skip finished runs) "
                    "and write OUT/report.md plus PNG figures. With no task, runs "
                    + ", ".join(tasks) + f" at their small default sizes. Tasks: {task_help}.")
    bench.add_argument("task", nargs="?", choices=list(tasks) + ["all"], default=None,
                       help="which task to run (default: " + ", ".join(n for n in DEFAULT_TASKS if n in tasks)
                            + "; 'all' adds " + ", ".join(n for n in tasks if n not in DEFAULT_TASKS) + ")")
    bench.add_argument("--losses", type=_losses, default=None,
                       help="comma-separated registry names to compare (default: the task's list)")
    bench.add_argument("--seeds", type=_seeds, default=None,
                       help="number of seeds (3) or explicit comma list (0,1,2); default: task's")
    bench.add_argument("--epochs", type=_positive_int, default=None,
                       help="training epochs/iterations per run (default: the task's)")
    bench.add_argument("--imbalance-factor", type=float, default=None,
                       help="n_max / n_min of the long-tailed training set (classification; default 50)")
    bench.add_argument("--data", default=None,
                       help="your own data: .npz with arrays X and y, or a CSV with a label column")
    bench.add_argument("--out", default=None,
                       help="output directory (default: ./tailwise-bench/<timestamp>)")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="where to train: auto (default: cuda when available, else cpu), cpu or cuda; "
                            "CUDA runs use bf16 mixed precision; every run records device and versions")
    bench.add_argument("--quiet", action="store_true", help="no progress bar and no printed report")
    for t in tasks.values():
        if t.add_arguments is not None:
            t.add_arguments(bench)

    sub.add_parser("list", help="print every registered loss with a one-line description")
    return parser


_ROLE = re.compile(r":(?:[\w-]+:)?[\w-]+:`~?([^`]+)`")


def plain_text(line: str) -> str:
    """A docstring line without reStructuredText markup, for the terminal:
    ``:func:`~a.b.f``` -> ``f``, ``:math:`x^2``` -> ``x^2``, double backticks -> plain text.

    Example:
        >>> plain_text("Balanced Softmax ``CE(z + log pi, y)``; see :func:`~tailwise.functional.ce`.")
        'Balanced Softmax CE(z + log pi, y); see ce.'
    """

    def role(m: "re.Match[str]") -> str:
        target = m.group(1)
        return target.rsplit(".", 1)[-1] if m.group(0).split("`", 1)[1].startswith("~") else target

    line = _ROLE.sub(role, line)
    return line.replace("``", "").replace("`", "")


def _cmd_list() -> int:
    from .registry import describe_losses

    desc = describe_losses()
    width = max((len(n) for n in desc), default=0)
    for name, line in desc.items():
        print(f"{name.ljust(width)}  {plain_text(line)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULT_TASKS, available_tasks
    from .bench.runner import run_tasks

    tasks = available_tasks()
    if args.task is None and getattr(args, "preset", None):
        args.task = "classification"  # the presets are classification grids
    if args.task is None:
        chosen = [t for name, t in tasks.items() if name in DEFAULT_TASKS]
    elif args.task == "all":
        chosen = list(tasks.values())
    else:
        chosen = [tasks[args.task]]
    run_tasks(chosen, args)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from .bench.task import BenchInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "bench":
            return _cmd_bench(args)
        parser.print_help()
        return 0
    except BenchInputError as exc:
        print(f"tailwise: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an unwritable --out: one line, like every user error
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"tailwise: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailwise: interrupted; finished runs are kept in results.jsonl", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
