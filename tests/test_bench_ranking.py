"""`tailwise bench ranking` end to end with tiny settings."""

import json

import pytest

from tailwise.bench.ranking import average_precision, recall_at_top
from tailwise.cli import main


def test_bench_ranking_tiny(tmp_path):
    out = tmp_path / "run"
    argv = ["bench", "ranking", "--losses", "bce,smooth_ap,pauc_at_budget", "--seeds", "2", "--epochs", "20",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and {r["loss"] for r in recs} == {"bce", "smooth_ap", "pauc_at_budget"}
    assert all(r["task"] == "ranking" and r["epochs"] == 20 and 0 <= r["ap"] <= 1 for r in recs)
    assert all(r["n_test_pos"] >= 1 and r["n_test_pos"] / r["n_test"] < 0.02 for r in recs)
    report = (out / "report.md").read_text()
    assert "| smooth_ap |" in report and "recall@top-1%" in report and "±" in report
    assert main(argv) == 0  # resume: nothing new
    assert len((out / "results.jsonl").read_text().splitlines()) == 6


def test_bench_ranking_bad_loss(tmp_path, capsys):
    assert main(["bench", "ranking", "--losses", "mse", "--out", str(tmp_path), "--quiet"]) == 2
    assert "unknown ranking loss 'mse'" in capsys.readouterr().err


def test_bench_metrics_match_sklearn():
    import torch
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    s, y = torch.randn(200, generator=g), (torch.rand(200, generator=g) < 0.05).float()
    y[0] = 1
    assert average_precision(s, y) == pytest.approx(average_precision_score(y.numpy(), s.numpy()))
    top = torch.argsort(s, descending=True)[:2]
    assert recall_at_top(s, y) == pytest.approx(float(y[top].sum() / y.sum()))
