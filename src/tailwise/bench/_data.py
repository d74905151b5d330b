"""Loading the user's own tabular data for ``tailwise bench --data PATH`` (``.npz`` or CSV).

Every problem is reported as :class:`~tailwise.bench.task.BenchInputError` (one clear line, no
traceback): a missing file, a CSV without the label column, non-numeric features, a single class.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Tuple

import numpy as np

from .task import BenchInputError

__all__ = ["load_user_data"]


def _load_npz(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise BenchInputError(f"{path}: .npz must contain arrays 'X' and 'y'; missing "
                                      f"{', '.join(missing)} (found: {', '.join(data.files) or 'nothing'})")
            X, y = data["X"], data["y"]
    except BenchInputError:
        raise
    except Exception as exc:  # zip/pickle errors: not an npz we can read
        raise BenchInputError(f"{path}: cannot read as .npz ({exc})") from None
    return X, y


def _load_csv(path: Path, label_column: str) -> Tuple[np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise BenchInputError(f"{path}: the CSV file is empty")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise BenchInputError(f"{path}: no label column {label_column!r} in the CSV header "
                              f"(columns: {', '.join(header)}); pass --label-column NAME")
    li = header.index(label_column)
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise BenchInputError(f"{path}: the CSV has a header but no data rows")
    X, y = [], []
    for line_no, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise BenchInputError(f"{path}: line {line_no} has {len(row)} fields, the header has {len(header)}")
        feats = []
        for j, cell in enumerate(row):
            if j == li:
                continue
            try:
                feats.append(float(cell))
            except ValueError:
                raise BenchInputError(f"{path}: non-numeric feature {cell!r} in column {header[j]!r} on "
                                      f"line {line_no}; encode categorical features as numbers first") from None
        X.append(feats)
        y.append(row[li].strip())
    return np.asarray(X, dtype=np.float64), np.asarray(y)


def load_user_data(path: str, label_column: str = "label") -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(X, y)`` with ``X`` float64 ``(n, d)`` and ``y`` int64 labels ``0..C-1``.

    String labels in a CSV are mapped to integers in sorted order.
    """
    p = Path(path)
    if not p.exists():
        raise BenchInputError(f"data file not found: {path}")
    if not p.is_file():
        raise BenchInputError(f"--data must be a file (.npz or .csv), got a directory: {path}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        X, y = _load_npz(p)
    elif suffix == ".csv":
        X, y = _load_csv(p, label_column)
    else:
        raise BenchInputError(f"--data must be a .npz (arrays X, y) or a .csv file, got {p.name}")
    if X.dtype.kind not in "biuf":
        raise BenchInputError(f"{path}: features X must be numeric, got dtype {X.dtype}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    y = np.asarray(y).reshape(-1)
    if X.shape[0] != y.shape[0]:
        raise BenchInputError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if not np.isfinite(X).all():
        raise BenchInputError(f"{path}: features contain NaN or infinite values")
    classes, y_int = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise BenchInputError(f"{path}: labels have a single class ({classes[0]!r}); need at least 2")
    return X, y_int.astype(np.int64)
