"""`tailwise bench regression` end to end with tiny settings."""

import json

from tailwise.cli import main


def test_bench_regression_tiny(tmp_path):
    out = tmp_path / "run"
    argv = ["bench", "regression", "--losses", "mse,bmc,bni,gai_learnable", "--seeds", "2", "--epochs", "30",
            "--label-shapes", "normal", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 8
    assert {r["loss"] for r in recs} == {"mse", "bmc", "bni", "gai_learnable"}
    assert all(r["task"] == "regression" and r["shape"] == "normal" and r["epochs"] == 30 for r in recs)
    mse = [r["test_mse"] for r in recs if r["loss"] == "mse"]
    bmc = [r["test_mse"] for r in recs if r["loss"] == "bmc"]
    # the paper's claim, checked on the highly imbalanced normal labels: BMC beats MSE per seed
    assert all(b < m for b, m in zip(bmc, mse))
    assert all("noise_sigma" in r for r in recs if r["loss"] == "gai_learnable")
    report = (out / "report.md").read_text()
    assert "| mse |" in report and "| bmc |" in report and "normal test MSE" in report
    assert (out / "regression_test_mse.png").stat().st_size > 0
    # resuming runs nothing new and keeps the same records
    assert main(argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 8


def test_bench_regression_bad_loss(tmp_path, capsys):
    assert main(["bench", "regression", "--losses", "focal", "--out", str(tmp_path), "--quiet"]) == 2
    assert "unknown regression loss 'focal'" in capsys.readouterr().err


def test_log_axis_error_bars_never_reach_zero():
    from tailwise.bench._report import log_error_bars

    lower, upper = log_error_bars([1.0, 0.1, 5.0], [0.5, 0.3, 1.0], [0.6, 0.004, 4.2])
    assert lower == [0.5, 0.1 - 0.004, 1.0]  # the middle bar stops at the best seed, not at -0.2
    assert upper == [0.5, 0.3, 1.0]
    assert all(m - lo > 0 for m, lo in zip([1.0, 0.1, 5.0], lower))
