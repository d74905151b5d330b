"""Stateful metrics: torchmetrics.Metric subclasses that match the functional (sklearn) values."""

import math

import numpy as np
import pytest
import torch

torchmetrics = pytest.importorskip("torchmetrics")

from dist_harness import run_distributed  # noqa: E402
from tailwise.metrics import (BalancedAccuracy, ConfusionMatrix, MacroF1, PerClassRecall,  # noqa: E402
                              ShotAccuracy, ShotRegressionErrors, balanced_accuracy, confusion_matrix, macro_f1,
                              per_class_recall, shot_accuracy, shot_regression_errors)


def _py(result):
    """Tensors -> Python numbers (dicts recursively)."""
    if isinstance(result, dict):
        return {k: _py(v) for k, v in result.items()}
    return int(result) if result.dtype == torch.int64 else float(result)


def assert_same_result(got, ref):
    assert isinstance(got, dict) == isinstance(ref, dict)
    if isinstance(ref, dict):
        assert list(got) == list(ref)
        for k in ref:
            assert_same_result(got[k], ref[k])
    elif isinstance(ref, float) and math.isnan(ref):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)


def _all(num_classes=4, counts=(300, 60, 10, 2)):
    return {"cm": ConfusionMatrix(num_classes), "bal": BalancedAccuracy(num_classes), "f1": MacroF1(num_classes),
            "rec": PerClassRecall(num_classes), "shot": ShotAccuracy(list(counts))}


def test_are_torchmetrics_metrics_with_summed_persistent_state():
    for m in _all().values():
        assert isinstance(m, torchmetrics.Metric)
        for name, fx in m._reductions.items():
            assert fx is not None and fx.__name__ in ("dim_zero_sum", "sum"), name
        assert set(m.state_dict()) == set(m._defaults)  # persistent: in checkpoints


def test_stateful_equals_functional_and_reset():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    counts = [300, 60, 10, 2]
    metrics = _all()
    for lo in range(0, 50, 16):
        for m in metrics.values():
            m.update(logits[lo:lo + 16], target[lo:lo + 16])
    assert torch.equal(metrics["cm"].compute(), confusion_matrix(logits, target))
    assert metrics["bal"].compute().item() == pytest.approx(balanced_accuracy(logits, target))
    assert metrics["f1"].compute().item() == pytest.approx(macro_f1(logits, target))
    torch.testing.assert_close(metrics["rec"].compute(), per_class_recall(logits, target), equal_nan=True)
    assert _py(metrics["shot"].compute()) == shot_accuracy(logits, target, counts)
    metrics["bal"].reset()
    with pytest.warns(UserWarning, match="compute"):  # torchmetrics warns before any update
        assert math.isnan(metrics["bal"].compute())
    assert metrics["cm"].compute().sum() == 50  # compute does not consume the state


def test_checkpoint_round_trip_and_device_move():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(30, 4, generator=g), torch.randint(0, 4, (30,), generator=g)
    shot = ShotAccuracy([300, 60, 10, 2])
    shot.update(logits, target)
    holder = torch.nn.Module()
    holder.metric = shot  # as a LightningModule attribute: saved with the module's state_dict
    state = holder.state_dict()
    assert {"metric.correct", "metric.total"} <= set(state)
    fresh_holder = torch.nn.Module()
    fresh_holder.metric = ShotAccuracy([300, 60, 10, 2])
    fresh_holder.load_state_dict(state)
    fresh_holder.metric._update_count = 1  # (torchmetrics does not checkpoint its update counter)
    assert _py(fresh_holder.metric.compute()) == _py(shot.compute())
    moved = shot.to(torch.float64)  # dtype casts must not touch integer counts
    assert moved.total.dtype == torch.int64
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        cuda = ShotAccuracy([300, 60, 10, 2]).cuda()
        cuda.update(logits.cuda(), target.cuda())
        assert cuda.total.is_cuda and _py(cuda.compute()) == _py(shot.compute())


def test_forward_returns_batch_value_and_accumulates():
    bal = BalancedAccuracy(3)
    batch = bal(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    assert batch.item() == pytest.approx(balanced_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])))
    bal(torch.tensor([2]), torch.tensor([2]))
    assert bal.compute().item() == pytest.approx(
        balanced_accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])))


def test_difference_from_torchmetrics_macro_recall_on_absent_classes():
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassRecall

    # every class present in the targets: identical to torchmetrics
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randint(0, 4, (60,), generator=g), torch.arange(60) % 4
    ours, theirs = BalancedAccuracy(4), MulticlassRecall(num_classes=4, average="macro")
    ours.update(pred, target)
    theirs.update(pred, target)
    assert ours.compute().item() == pytest.approx(theirs.compute().item(), abs=1e-6)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    ref_cm = MulticlassConfusionMatrix(num_classes=4)
    ref_cm.update(pred, target)
    assert torch.equal(cm.compute(), ref_cm.compute())
    # class 2 is predicted but never a target: sklearn (and tailwise) leave it out of the
    # average, torchmetrics counts it with recall 0 (documented in BalancedAccuracy)
    pred, target = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])
    ours, theirs = BalancedAccuracy(3), MulticlassRecall(num_classes=3, average="macro")
    ours.update(pred, target)
    theirs.update(pred, target)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert ours.compute().item() == pytest.approx(sklearn_metrics.balanced_accuracy_score(target, pred))
    assert ours.compute().item() == pytest.approx(2 / 3)
    assert theirs.compute().item() == pytest.approx(4 / 9, abs=1e-6)
    # macro F1 leaves out classes absent from both targets and predictions, in both libraries
    from torchmetrics.classification import MulticlassF1Score

    pred, target = torch.tensor([0, 0, 1, 2, 1]), torch.tensor([0, 1, 1, 1, 0])
    f1, ref_f1 = MacroF1(5), MulticlassF1Score(num_classes=5, average="macro")
    f1.update(pred, target)
    ref_f1.update(pred, target)
    assert f1.compute().item() == pytest.approx(ref_f1.compute().item(), abs=1e-6)
    assert f1.compute().item() == pytest.approx(sklearn_metrics.f1_score(target, pred, average="macro",
                                                                         zero_division=0))


def test_stateful_regression_equals_functional():
    rng = np.random.RandomState(1)
    train = torch.as_tensor(np.round(rng.exponential(5, 2000)))
    target = torch.as_tensor(rng.randint(0, 25, 70).astype(float))
    pred = target + torch.as_tensor(rng.normal(size=70))
    m = ShotRegressionErrors(train)
    m.update(pred[:30], target[:30])
    m.update(pred[30:].view(-1, 1), target[30:])
    flat = m.compute()
    assert all(v.dim() == 0 for v in flat.values())  # loggable with log_dict
    assert_same_result(ShotRegressionErrors.nested(flat), shot_regression_errors(pred, target, train))
    with pytest.raises(ValueError, match="same length"):
        m.update(pred[:2], target[:3])


def _metrics_worker(rank, world_size, logits, target, pred_r, target_r, train):
    sizes = [13, 37]  # unequal shards
    lo = sum(sizes[:rank])
    sl = slice(lo, lo + sizes[rank])
    cm, bal, f1, shot = ConfusionMatrix(5), BalancedAccuracy(5), MacroF1(5), ShotAccuracy([200, 80, 30, 10, 1])
    for m in (cm, bal, f1, shot):
        m.update(logits[sl], target[sl])
    rs = [6, 24][rank]
    rlo = [0, 6][rank]
    reg = ShotRegressionErrors(train)
    reg.update(pred_r[rlo:rlo + rs], target_r[rlo:rlo + rs])
    out = {"cm": cm.compute(), "bal": bal.compute(), "f1": f1.compute(), "shot": _py(shot.compute()),
           "reg": ShotRegressionErrors.nested(reg.compute()), "local": cm.confusion.sum()}
    return out


@pytest.mark.distributed
def test_stateful_metrics_two_ranks_equal_single_process():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(50, 5, generator=g), torch.randint(0, 5, (50,), generator=g)
    train = torch.randint(0, 12, (400,), generator=g).float()
    target_r = torch.randint(0, 14, (30,), generator=g).float()
    pred_r = target_r + torch.randn(30, generator=g, dtype=torch.float32)
    res = run_distributed(_metrics_worker, 2, logits, target, pred_r, target_r, train)
    ref_reg = shot_regression_errors(pred_r, target_r, train)
    for rank, r in enumerate(res):
        assert torch.equal(r["cm"], confusion_matrix(logits, target))
        assert r["bal"].item() == pytest.approx(balanced_accuracy(logits, target))
        assert r["f1"].item() == pytest.approx(macro_f1(logits, target))
        assert_same_result(r["shot"], shot_accuracy(logits, target, [200, 80, 30, 10, 1]))
        assert_same_result(r["reg"], ref_reg)
        assert int(r["local"]) == [13, 37][rank]  # torchmetrics restores the local state after sync
