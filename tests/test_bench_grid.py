"""The classification grid: loss arguments, identical objectives merged, samplers, post-hoc
adjustment, presets, --device, and one-line errors for a loss that is not a classification loss."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tailwise.bench import BenchInputError
from tailwise.bench._grid import identical_groups, loss_label, parse_loss
from tailwise.bench.classification import _holdout, _make_sampler, _tune_tau
from tailwise.cli import main

TAILWISE = [sys.executable, "-m", "tailwise.cli"]


def _strict_lines(path):
    def no_constants(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]


def test_parse_loss_arguments():
    assert parse_loss("logit_adjusted:tau=2") == ("logit_adjusted", {"tau": 2})
    assert parse_loss("focal:gamma=0.5:reduction=mean") == ("focal", {"gamma": 0.5, "reduction": "mean"})
    assert parse_loss("cross_entropy") == ("cross_entropy", {})
    assert loss_label("logit_adjusted", {"tau": 2.0}) == "logit_adjusted(tau=2)"
    with pytest.raises(BenchInputError, match="name:key=value"):
        parse_loss("focal:gamma")


def test_identical_objectives_are_grouped():
    losses = [("cross_entropy", {}), ("balanced_softmax", {}), ("logit_adjusted", {}),
              ("logit_adjusted", {"tau": 2}), ("focal", {"gamma": 0}), ("focal", {})]
    groups = identical_groups(losses)
    # LA at tau=1 is Balanced Softmax; focal with gamma=0 is cross-entropy; the others stand alone
    assert groups == [[0, 4], [1, 2], [3], [5]]


def test_giou_for_classification_is_one_line_exit_2(tmp_path):
    res = subprocess.run(TAILWISE + ["bench", "classification", "--losses", "giou", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tailwise: error: giou is not a classification loss"), res.stderr


@pytest.mark.parametrize("argv, message", [
    (["--losses", "focal:gama=1"], "loss 'focal' has no argument 'gama' (it takes: alpha, gamma"),
    (["--samplers", "none,oversample"], "--samplers takes a comma list of none, class_balanced, sqrt, progressive"),
    (["--device", "cuda"], "--device cuda: no CUDA device is available"),
    (["--many-threshold", "10", "--few-threshold", "20"], "--few-threshold (20) must not exceed"),
])
def test_grid_errors_are_one_line(argv, message, capsys, tmp_path):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "classification", *argv, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_samplers_follow_their_class_distribution():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    drawn = torch.cat([torch.as_tensor(list(_make_sampler("class_balanced", labels, 5, seed=s))) for s in range(20)])
    frac = torch.bincount(labels[drawn], minlength=3).double() / drawn.numel()
    assert torch.allclose(frac, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.05)
    sqrt = _make_sampler("sqrt", labels, 5, seed=0)
    assert len(sqrt) == 100  # one epoch = the training set's size, on one process
    prog = _make_sampler("progressive", labels, 4, seed=0)
    prog.set_epoch(4)
    assert torch.allclose(prog.class_probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_holdout_is_stratified_and_disjoint():
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 2 + [3])
    keep, held = _holdout(y, seed=0)
    assert set(keep.tolist()).isdisjoint(held.tolist()) and len(keep) + len(held) == len(y)
    assert torch.bincount(y[held], minlength=4).tolist() == [10, 2, 1, 0]  # a singleton class keeps its sample


def test_tau_tuning_recovers_the_prior_shift():
    # logits = log-likelihood + log prior (a CE model's ideal): tau=1 removes the prior exactly
    gen = torch.Generator().manual_seed(0)
    counts = torch.tensor([900, 90, 10])
    y = torch.arange(3).repeat_interleave(200)
    loglik = torch.randn(600, 3, generator=gen) * 0.8
    loglik[torch.arange(600), y] += 1.5
    logits = loglik + torch.log(counts / counts.sum())
    tau, acc = _tune_tau(logits, y, counts)
    assert 0.75 <= tau <= 1.25 and acc > 0.7


def test_grid_run_end_to_end_merges_rows_and_writes_strict_json(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    code = main(["bench", "classification", "--losses", "cross_entropy,balanced_softmax,logit_adjusted",
                 "--samplers", "none,class_balanced", "--post-hoc", "adjust", "--seeds", "2", "--epochs", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    records = _strict_lines(out / "results.jsonl")
    labels = [r["label"] for r in records]
    # LA(tau=1) trains once, as Balanced Softmax's row: 4 configurations x 2 seeds
    assert sorted(set(labels)) == ["balanced_softmax", "cross_entropy", "cross_entropy + class_balanced sampler",
                                   "cross_entropy + post-hoc adjust"]
    assert len(records) == 8
    for r in records:
        assert r["device"] == "cpu" and r["env"]["torch"] == torch.__version__ and "tailwise" in r["env"]
        assert r["few"] is None or isinstance(r["few"], float)
    adjusted = [r for r in records if r["post_hoc"] == "adjust"]
    assert all(0 <= r["tau"] <= 3 and r["holdout_size"] > 0 for r in adjusted)
    report = (out / "report.md").read_text()
    assert "| balanced_softmax = logit_adjusted |" in report
    assert "same objective with these arguments" in report
    assert "natural" in report and "The test split is balanced" in report
    assert "Post-hoc adjustment:" in report


def test_empty_shot_group_is_explained_and_one_seed_has_no_spread(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    assert main(["bench", "classification", "--losses", "cross_entropy,balanced_softmax", "--seeds", "1",
                 "--epochs", "1", "--imbalance-factor", "2", "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    # digits at IF 2: every class has 62..124 training images, so no class is few-shot (< 20)
    assert "The few-shot group is empty: no class has fewer than 20 training samples" in report
    assert "--many-threshold" in report and "--few-threshold" in report
    assert "±" not in report.split("| configuration |")[1].split("\n\n")[0]


def _fake_fashion(root, per_class_train=40, per_class_test=6):
    """The four Fashion-MNIST IDX .gz files, tiny (class c has brightness ~ c)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        images = (labels[:, None] * 20 + rng.integers(0, 30, (labels.size, 784))).astype(np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())


def test_gpu_preset_plans_the_documented_grid(tmp_path):
    import argparse

    from tailwise.bench.classification import plan

    data = tmp_path / "fashion"
    _fake_fashion(data)
    args = argparse.Namespace(preset="gpu-worked-example", data_dir=str(data), seeds=None, epochs=None, losses=None,
                              samplers=None, post_hoc=None, dataset=None, imbalance_factor=None, data=None,
                              many_threshold=None, few_threshold=None, device="cpu")
    specs = plan(args)
    assert len(specs) == 30  # 6 configurations x 5 seeds
    assert {s["label"] for s in specs} == {
        "cross_entropy", "balanced_softmax", "logit_adjusted(tau=2)", "focal",
        "cross_entropy + class_balanced sampler", "cross_entropy + post-hoc adjust"}
    assert {s["seed"] for s in specs} == {0, 1, 2, 3, 4}
    assert all(s["dataset"] == "fashion-mnist-lt" and s["imbalance_factor"] == 100 and s["epochs"] == 30
               and s["many_threshold"] == 1000 and s["few_threshold"] == 200 for s in specs)


def test_gpu_preset_runs_from_a_data_dir(tmp_path):
    data = tmp_path / "fashion"
    _fake_fashion(data)
    out = tmp_path / "out"
    # explicit flags override the preset: one configuration, one seed, one epoch, IF 10
    assert main(["bench", "--preset", "gpu-worked-example", "--data-dir", str(data), "--seeds", "1",
                 "--epochs", "1", "--imbalance-factor", "10", "--losses", "cross_entropy", "--samplers", "none",
                 "--post-hoc", "none", "--out", str(out), "--quiet"]) == 0
    (record,) = _strict_lines(out / "results.jsonl")
    assert record["dataset"] == "fashion-mnist-lt" and record["many_threshold"] == 1000
    assert record["class_counts"][0] == 40 and record["class_counts"][-1] == 4
    assert record["test_counts"] == [6] * 10 and record["device_name"] == "cpu"


def test_time_estimate_is_printed_before_a_long_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    import tailwise.bench.classification as cls

    real = cls.time.perf_counter
    ticks = iter(range(0, 10**6, 50))  # every clock read is 50 s later: the first epoch "takes" 50 s
    monkeypatch.setattr(cls.time, "perf_counter", lambda: float(next(ticks)))
    assert main(["bench", "classification", "--losses", "cross_entropy,focal", "--seeds", "1", "--epochs", "2",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    monkeypatch.setattr(cls.time, "perf_counter", real)
    # --quiet silences it; without --quiet the runner prints one line before the rest of the runs
    assert "estimated" not in capsys.readouterr().err
    ticks = iter(range(0, 10**6, 50))
    monkeypatch.setattr(cls.time, "perf_counter", lambda: float(next(ticks)))
    assert main(["bench", "classification", "--losses", "cross_entropy,focal", "--seeds", "1", "--epochs", "2",
                 "--out", str(tmp_path / "o2")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "estimated" in line]
    assert len(err) == 1 and err[0].startswith("tailwise: estimated time for 2 classification run(s): about 3.3 min "
                                  "(1.7 min each, timed from the first two epochs on cpu)")
