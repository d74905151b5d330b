import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tailwise.metrics import (balanced_accuracy, confusion_matrix, macro_f1, per_class_recall, shot_accuracy,
                              shot_regression_errors)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def assert_same_result(got, ref):
    """Nested dicts of numbers equal up to float rounding, NaN matching NaN."""
    assert isinstance(got, dict) == isinstance(ref, dict)
    if isinstance(ref, dict):
        assert list(got) == list(ref)
        for k in ref:
            assert_same_result(got[k], ref[k])
    elif isinstance(ref, float) and math.isnan(ref):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- classification, by hand
def test_hand_case_confusion_recall_balanced_f1():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 2, 1, 1, 1])
    assert confusion_matrix(pred, target).tolist() == [[2, 1, 1], [0, 2, 0], [0, 1, 0]]
    torch.testing.assert_close(per_class_recall(pred, target), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    assert balanced_accuracy(pred, target) == pytest.approx(0.5)
    # F1: class0 2*2/(4+2)=2/3, class1 2*2/(2+4)=2/3, class2 0 -> 4/9
    assert macro_f1(pred, target) == pytest.approx(4 / 9)
    # logits give the same as their argmax
    logits = torch.nn.functional.one_hot(pred, 3).float() * 3 + 0.1 * torch.randn(7, 3)
    assert balanced_accuracy(logits, target) == pytest.approx(0.5)


def test_absent_classes():
    pred, target = torch.tensor([0, 1, 3]), torch.tensor([0, 0, 1])
    recall = per_class_recall(pred, target, num_classes=5)
    assert recall[:2].tolist() == [0.5, 0.0] and all(math.isnan(v) for v in recall[2:].tolist())
    assert balanced_accuracy(pred, target, num_classes=5) == pytest.approx(0.25)
    # classes present in target or pred: 0 (2/3), 1 (0), 3 (0); class 2 and 4 left out
    assert macro_f1(pred, target, num_classes=5) == pytest.approx(2 / 9)
    empty = torch.zeros(0, dtype=torch.long)
    assert math.isnan(balanced_accuracy(empty, empty, num_classes=3))
    assert math.isnan(macro_f1(torch.zeros(0, 3), empty))


@given(n=st.integers(1, 60), c=st.integers(1, 6), seed=st.integers(0, 10 ** 6))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_against_sklearn(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g)
    pred = logits.argmax(1)
    y, p = target.numpy(), pred.numpy()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_bal = sklearn_metrics.balanced_accuracy_score(y, p)
        ref_f1 = sklearn_metrics.f1_score(y, p, average="macro", zero_division=0)
        ref_rec = sklearn_metrics.recall_score(y, p, labels=list(range(c)), average=None, zero_division=0)
    assert balanced_accuracy(logits, target) == pytest.approx(ref_bal)
    assert macro_f1(pred, target, num_classes=c) == pytest.approx(ref_f1)
    rec = per_class_recall(logits, target)
    present = torch.bincount(target, minlength=c) > 0
    np.testing.assert_allclose(rec[present].numpy(), ref_rec[present.numpy()])
    np.testing.assert_array_equal(confusion_matrix(pred, target, c).numpy(),
                                  sklearn_metrics.confusion_matrix(y, p, labels=list(range(c))))


# ----------------------------------------------------------------------------- shot accuracy
def _naive_shot(pred, target, counts, many, few):
    groups = {"many": [], "medium": [], "few": []}
    for c in sorted(set(target)):
        idx = [i for i, t in enumerate(target) if t == c]
        acc = sum(pred[i] == c for i in idx) / len(idx)
        key = "many" if counts[c] > many else ("few" if counts[c] < few else "medium")
        groups[key].append(acc)
    out = {k: (sum(v) / len(v) if v else float("nan")) for k, v in groups.items()}
    out["overall"] = sum(p == t for p, t in zip(pred, target)) / len(target)
    return out


def test_shot_accuracy_hand_case_and_thresholds():
    counts = torch.tensor([101, 100, 20, 19, 0])  # many, medium, medium, few, few (zero-shot)
    target = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])
    pred = torch.tensor([0, 1, 1, 2, 0, 3, 0, 0])
    r = shot_accuracy(pred, target, counts)
    # many: class0 1/2; medium: class1 1, class2 1/2 -> 0.75; few: class3 1, class4 0 -> 0.5
    assert r == {"many": 0.5, "medium": 0.75, "few": 0.5, "overall": 4 / 8}
    assert list(r) == ["many", "medium", "few", "overall"]


def test_shot_accuracy_empty_group_is_nan_and_json():
    counts = [500, 400, 5]
    r = shot_accuracy(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), counts)
    assert math.isnan(r["medium"]) and r["many"] == 1.0 and r["few"] == 1.0
    assert all(isinstance(v, float) for v in r.values())
    assert json.loads(json.dumps(r))["many"] == 1.0
    # a class absent from the test set does not count in its group
    r = shot_accuracy(torch.tensor([0]), torch.tensor([0]), counts)
    assert r["many"] == 1.0 and math.isnan(r["few"])


@given(n=st.integers(1, 80), c=st.integers(1, 8), seed=st.integers(0, 10 ** 6),
       many=st.integers(5, 200), few=st.integers(0, 5))
def test_shot_accuracy_against_naive(n, c, seed, many, few):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=g)
    pred = torch.randint(0, c, (n,), generator=g)
    counts = torch.randint(0, 300, (c,), generator=g)
    counts[0] += 1
    got = shot_accuracy(pred, target, counts, many=many, few=few)
    ref = _naive_shot(pred.tolist(), target.tolist(), counts.tolist(), many, few)
    for k in ref:
        assert (math.isnan(got[k]) and math.isnan(ref[k])) or got[k] == pytest.approx(ref[k])


def test_classification_bad_inputs():
    with pytest.raises(ValueError, match="pred and target must have the same length"):
        balanced_accuracy(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(TypeError, match="target must hold integer"):
        macro_f1(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target must be a 1-D tensor of class labels \(N,\)"):
        per_class_recall(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="pred must be 1-D or 2-D"):
        balanced_accuracy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes=3 columns"):
        balanced_accuracy(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), num_classes=3)
    with pytest.raises(ValueError, match="class_counts must have one entry per class"):
        shot_accuracy(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), [10, 20, 30])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        shot_accuracy(torch.tensor([0, 3]), torch.tensor([0, 1]), [10, 20, 30])
    with pytest.raises(ValueError, match="few must be <= many"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0]), [10], many=5, few=50)
    with pytest.raises(ValueError, match="class_counts must be non-negative"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0]), [-1])


# ----------------------------------------------------------------------------- regression
def _naive_dir(preds, labels, train_labels, many=100, few=20):
    """The DIR shot_metrics protocol for integer labels, written with numpy loops."""
    train = np.asarray(train_labels).astype(int)
    groups = {"many": [], "medium": [], "few": []}
    per_bin_mse, per_bin_mae = [], []
    for l in np.unique(labels):
        e = preds[labels == l] - labels[labels == l]
        n_train = int((train == l).sum())
        key = "many" if n_train > many else ("few" if n_train < few else "medium")
        groups[key].extend(e.tolist())
        per_bin_mse.append(np.mean(e ** 2))
        per_bin_mae.append(np.mean(np.abs(e)))
    out = {}
    for k, errs in list(groups.items()) + [("overall", (preds - labels).tolist())]:
        e = np.abs(np.asarray(errs))
        out[k] = {"mse": float(np.mean(e ** 2)), "mae": float(np.mean(e)),
                  "gmean": float(np.exp(np.mean(np.log(e)))), "count": len(e)} if len(e) else None
    out["balanced_mse"], out["balanced_mae"] = float(np.mean(per_bin_mse)), float(np.mean(per_bin_mae))
    return out


def test_regression_hand_case():
    train = [0.0] * 150 + [1.0] * 50 + [2.0] * 5
    r = shot_regression_errors(torch.tensor([0.5, -0.5, 1.0, 4.0, 3.0]),
                               torch.tensor([0.0, 0.0, 1.0, 2.0, 7.0]), train)
    assert r["many"] == {"mse": 0.25, "mae": 0.5, "gmean": 0.5, "count": 2}
    assert r["medium"] == {"mse": 0.0, "mae": 0.0, "gmean": 0.0, "count": 1}
    # label 2 (5 train samples) and label 7 (outside the training range, zero-shot) are few-shot
    assert r["few"]["count"] == 2 and r["few"]["mse"] == pytest.approx((4 + 16) / 2)
    assert r["few"]["gmean"] == pytest.approx(math.sqrt(2 * 4))
    assert r["overall"]["mae"] == pytest.approx((0.5 + 0.5 + 0 + 2 + 4) / 5)
    assert r["balanced_mse"] == pytest.approx((0.25 + 0 + 4 + 16) / 4)
    assert json.loads(json.dumps(r))["few"]["count"] == 2


@given(seed=st.integers(0, 10 ** 6), n=st.integers(1, 200))
def test_regression_against_dir_protocol(seed, n):
    rng = np.random.RandomState(seed)
    train = np.round(rng.exponential(6, size=3000)).astype(int)
    labels = rng.randint(0, 30, size=n).astype(np.float64)
    preds = labels + rng.normal(0, 2, size=n)
    got = shot_regression_errors(torch.as_tensor(preds), torch.as_tensor(labels), torch.as_tensor(train))
    ref = _naive_dir(preds, labels, train)
    for k in ("many", "medium", "few", "overall"):
        if ref[k] is None:
            assert got[k]["count"] == 0 and math.isnan(got[k]["mse"])
            continue
        for m in ("mse", "mae", "gmean"):
            assert got[k][m] == pytest.approx(ref[k][m], rel=1e-9), (k, m)
        assert got[k]["count"] == ref[k]["count"]
    assert got["balanced_mse"] == pytest.approx(ref["balanced_mse"])
    assert got["balanced_mae"] == pytest.approx(ref["balanced_mae"])


def test_regression_bins_int_and_edges():
    train = torch.linspace(0, 10, 1000)  # 100 per unit bin, 1 at 10.0
    target = torch.tensor([0.5, 9.99, 10.0, -1.0])
    pred = target + 1
    r = shot_regression_errors(pred, target, train, bins=2)  # [0, 5), [5, 10] -> 500 each: many
    assert r["many"]["count"] == 3 and r["few"]["count"] == 1  # -1.0 is below the training range
    edges = [0.0, 5.0, 9.995, 20.0]  # third bin holds 1 training label: few
    r = shot_regression_errors(pred, target, train, bins=edges)
    assert r["many"]["count"] == 2 and r["few"]["count"] == 2
    assert r["balanced_mse"] == pytest.approx(1.0)


def test_regression_bad_inputs():
    with pytest.raises(ValueError, match="pred and target must have the same length"):
        shot_regression_errors(torch.zeros(3), torch.zeros(2), [1.0])
    with pytest.raises(ValueError, match="pred must be 1-D"):
        shot_regression_errors(torch.zeros(3, 2), torch.zeros(3), [1.0])
    with pytest.raises(ValueError, match="target must be finite"):
        shot_regression_errors(torch.zeros(2), torch.tensor([0.0, float("nan")]), [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        shot_regression_errors(torch.zeros(2), torch.zeros(2), [1.0], bins=[0.0, 0.0])
    with pytest.raises(ValueError, match="train_labels must not be empty"):
        shot_regression_errors(torch.zeros(2), torch.zeros(2), [])
