"""`tailwise bench classification`: user-data errors, and a tiny end-to-end run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tailwise.cli import main

TAILWISE = [sys.executable, "-m", "tailwise.cli"]


def _run(args, tmp_path):
    return subprocess.run(TAILWISE + args + ["--out", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, timeout=120)


def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")


@pytest.mark.parametrize("case, message", [
    ("missing", "data file not found"),
    ("no_label", "no label column 'label' in the CSV header (columns: a, b, target)"),
    ("single_class", "labels have a single class"),
    ("non_numeric", "non-numeric feature 'red' in column 'b' on line 3"),
    ("npz_keys", "must contain arrays 'X' and 'y'; missing y"),
    ("suffix", "must be a .npz (arrays X, y) or a .csv file"),
])
def test_bad_user_data_gives_one_clear_line(case, message, tmp_path):
    if case == "missing":
        path = tmp_path / "nope.csv"
    elif case == "no_label":
        path = tmp_path / "d.csv"
        _write_csv(path, ["a", "b", "target"], [[1, 2, 0], [3, 4, 1]])
    elif case == "single_class":
        path = tmp_path / "d.csv"
        _write_csv(path, ["a", "label"], [[1, "x"], [2, "x"], [3, "x"]])
    elif case == "non_numeric":
        path = tmp_path / "d.csv"
        _write_csv(path, ["a", "b", "label"], [[1, 2, 0], [3, "red", 1]])
    elif case == "npz_keys":
        path = tmp_path / "d.npz"
        np.savez(path, X=np.ones((4, 2)))
    else:
        path = tmp_path / "d.txt"
        path.write_text("1,2\n")
    res = _run(["bench", "classification", "--data", str(path)], tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tailwise: error: "), res.stderr
    assert message in err[0]
    assert "Traceback" not in res.stderr


def test_unknown_loss_is_a_clear_error(capsys, tmp_path):
    code = main(["bench", "classification", "--losses", "cross_entropy,not_a_loss", "--out",
                 str(tmp_path), "--quiet"])
    assert code == 2
    assert "unknown loss not_a_loss" in capsys.readouterr().err


def test_csv_user_data_end_to_end(tmp_path):
    pytest.importorskip("tailwise.data")
    rng = np.random.default_rng(0)
    rows = []
    for c, n in enumerate([120, 40, 12]):
        centre = np.array([3.0 * c, -2.0 * c])
        for _ in range(n):
            x = centre + rng.normal(size=2)
            rows.append([f"{x[0]:.4f}", f"{x[1]:.4f}", ["cat", "dog", "eel"][c]])
    path = tmp_path / "mine.csv"
    _write_csv(path, ["f1", "f2", "label"], rows)
    out = tmp_path / "out"
    code = main(["bench", "classification", "--data", str(path), "--losses",
                 "cross_entropy,balanced_softmax", "--seeds", "2", "--epochs", "3", "--out", str(out),
                 "--quiet", "--many-threshold", "50", "--few-threshold", "15"])
    assert code == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert r["task"] == "classification" and r["loss"] in ("cross_entropy", "balanced_softmax")
        for key in ("many", "medium", "few", "overall", "balanced_acc"):
            assert key in r
        assert 0.0 <= r["overall"] <= 1.0
        # 25% stratified test split: the rest trains
        assert r["class_counts"] == [90, 30, 9]
    report = (out / "report.md").read_text()
    assert "| configuration | many | medium | few | overall | balanced | natural |" in report
    assert "**Recommendation:**" in report
    assert (out / "classification_per_class.png").exists()


def _fake_cifar10(root, per_class_train=12, per_class_test=3, seed=0):
    """A tiny file-format-faithful CIFAR-10 python release (class c has brightness ~ c)."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n_per_class):
        labels = np.repeat(np.arange(10), n_per_class)
        data = (labels[:, None] * 25 + rng.integers(0, 10, (labels.size, 3072))).astype(np.uint8)
        return {"data": data, "labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_class_train // 5 + 1), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(per_class_test), f)


def test_cifar10_lt_from_local_copy(tmp_path):
    pytest.importorskip("tailwise.data")
    _fake_cifar10(tmp_path / "cifar")
    out = tmp_path / "out"
    code = main(["bench", "classification", "--dataset", "cifar10-lt", "--data-dir", str(tmp_path / "cifar"),
                 "--imbalance-factor", "5", "--losses", "cross_entropy", "--seeds", "1", "--epochs", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["dataset"] == "cifar10-lt" and record["imbalance_factor"] == 5
    assert record["class_counts"][0] == 15 and record["class_counts"][-1] == 3
    assert sum(1 for _ in record["per_class_acc"]) == 10


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10-lt"], "needs --data-dir pointing at a local CIFAR python release"),
    (["--dataset", "cifar100-lt", "--data-dir", "."], "no local CIFAR copy under ."),
    (["--dataset", "fashion-mnist-lt", "--data-dir", "."], "the IDX files"),
])
def test_missing_image_dataset_is_a_clear_error(argv, message, capsys, tmp_path):
    code = main(["bench", "classification", *argv, "--out", str(tmp_path), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "never downloads" in err


def test_default_digits_long_tail(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    code = main(["bench", "classification", "--losses", "cross_entropy,iif", "--seeds", "1", "--epochs", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == ["cross_entropy", "iif"]
    for r in records:
        # 50 test images per class held out, the rest (>= 124 per class) made long-tailed with IF 50
        counts = r["class_counts"]
        assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] >= 50 * 0.8
        assert r["dataset"] == "digits" and r["imbalance_factor"] == 50
        assert len(r["per_class_acc"]) == 10
    assert "balanced test split of 50 images per class" in (out / "report.md").read_text()
