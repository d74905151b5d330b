"""Tests of the overlap losses (Dice, Tversky, Focal Tversky) and Dice + CE."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tailwise
from tailwise.functional import dice_ce_loss, dice_loss, focal_tversky_loss, tversky_loss


# ---------------------------------------------------------------- independent naive reference
def _naive(x, t, *, kind="dice", mode="multiclass", from_logits=True, smooth=1e-5, alpha=0.5, beta=0.5,
           gamma=1.0, squared_pred=False, class_weight=None, ignore_index=-100, include_background=True,
           batch=False, eps=1e-7):
    """float64 numpy loops over images and classes with an explicit one-hot target."""
    x = x.detach().double().numpy()
    t = t.detach().numpy()
    n, c = x.shape[:2]
    xf = x.reshape(n, c, -1)
    length = xf.shape[2]
    if from_logits:
        if mode == "multiclass":
            e = np.exp(xf - xf.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
        else:
            p = 1.0 / (1.0 + np.exp(-xf))
    else:
        p = xf
    y = np.zeros((n, c, length))
    m = np.ones((n, c, length))
    if t.shape == x.shape:
        tf = t.reshape(n, c, -1).astype(np.float64)
        m = (tf != ignore_index).astype(np.float64)
        y = tf * m
    else:
        tf = t.reshape(n, -1)
        for i in range(n):
            for j in range(length):
                if tf[i, j] == ignore_index:
                    m[i, :, j] = 0.0
                elif mode == "binary":
                    y[i, 0, j] = float(tf[i, j] == 1)
                else:
                    y[i, tf[i, j], j] = 1.0
    groups = [list(range(n))] if batch else [[i] for i in range(n)]
    out = []
    for g in groups:
        per_class = []
        for k in range(c):
            tp = sp = sy = sq = sy2 = 0.0
            for i in g:
                for j in range(length):
                    tp += m[i, k, j] * p[i, k, j] * y[i, k, j]
                    sp += m[i, k, j] * p[i, k, j]
                    sy += m[i, k, j] * y[i, k, j]
                    sq += m[i, k, j] * p[i, k, j] ** 2
                    sy2 += m[i, k, j] * y[i, k, j] ** 2
            if kind == "dice":
                den = (sq + sy2) if squared_pred else (sp + sy)
                per_class.append(1 - (2 * tp + smooth) / (den + smooth))
            else:
                ti = (tp + smooth) / (tp + alpha * (sp - tp) + beta * (sy - tp) + smooth)
                per_class.append(max(1 - ti, eps) ** gamma if kind == "focal" else 1 - ti)
        per_class = np.array(per_class)
        w = np.ones(c) if class_weight is None else class_weight.double().numpy()
        if not include_background:
            per_class, w = per_class[1:], w[1:]
        out.append((per_class * w).sum() / w.sum())
    return float(np.mean(out))


def _logits(*shape, dtype=torch.float64):
    return (2 * torch.randn(*shape, dtype=dtype)).requires_grad_(True)


# ---------------------------------------------------------------- hand-computed values
PROBS = torch.tensor([0.9, 0.2, 0.6, 0.1], dtype=torch.float64).view(1, 1, 4)
TGT = torch.tensor([1, 0, 1, 0]).view(1, 4)


def test_dice_hand_value():
    # tp = 1.5, sum p = 1.8, sum y = 2 -> dice = 3 / 3.8
    got = dice_loss(PROBS, TGT, mode="binary", from_logits=False, smooth=0.0)
    assert got.item() == pytest.approx(1 - 3 / 3.8, abs=1e-12)
    # squared: sum p^2 = 0.81 + 0.04 + 0.36 + 0.01 = 1.22
    got = dice_loss(PROBS, TGT, mode="binary", from_logits=False, smooth=0.0, squared_pred=True)
    assert got.item() == pytest.approx(1 - 3 / 3.22, abs=1e-12)


def test_tversky_hand_value():
    # fp = 0.3, fn = 0.5 ; TI = 1.5 / (1.5 + 0.3 * 0.3 + 0.7 * 0.5) = 1.5 / 1.94
    got = tversky_loss(PROBS, TGT, mode="binary", from_logits=False, smooth=0.0)
    assert got.item() == pytest.approx(1 - 1.5 / 1.94, abs=1e-12)
    got = focal_tversky_loss(PROBS, TGT, mode="binary", from_logits=False, smooth=0.0)
    assert got.item() == pytest.approx((1 - 1.5 / 1.94) ** 0.75, abs=1e-12)
    # the official code's smoothing of 1: (1.5 + 1) / (1.94 + 1)
    got = tversky_loss(PROBS, TGT, mode="binary", from_logits=False)
    assert got.item() == pytest.approx(1 - 2.5 / 2.94, abs=1e-12)


def test_multiclass_hand_value():
    # two pixels, two classes, probabilities given; per class dice then class mean
    p = torch.tensor([[[0.8, 0.4], [0.2, 0.6]]], dtype=torch.float64)  # (1, 2, 2)
    t = torch.tensor([[0, 1]])
    d0 = 2 * 0.8 / (1.2 + 1)
    d1 = 2 * 0.6 / (0.8 + 1)
    got = dice_loss(p, t, from_logits=False, smooth=0.0)
    assert got.item() == pytest.approx(1 - (d0 + d1) / 2, abs=1e-12)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    got = dice_loss(p, t, from_logits=False, smooth=0.0, class_weight=w)
    assert got.item() == pytest.approx(((1 - d0) + 3 * (1 - d1)) / 4, abs=1e-12)
    got = dice_loss(p, t, from_logits=False, smooth=0.0, include_background=False)
    assert got.item() == pytest.approx(1 - d1, abs=1e-12)


def test_empty_class_correctly_empty_scores_zero():
    # nothing in the target and nothing predicted: smoothing in numerator and denominator -> 0
    p = torch.zeros(2, 1, 5, 5, dtype=torch.float64)
    t = torch.zeros(2, 5, 5, dtype=torch.long)
    for smooth in (1e-5, 1.0):
        assert dice_loss(p, t, mode="binary", from_logits=False, smooth=smooth).item() == 0.0
        assert tversky_loss(p, t, mode="binary", from_logits=False, smooth=smooth).item() == 0.0
        assert focal_tversky_loss(p, t, mode="binary", from_logits=False, smooth=smooth).item() <= 1e-5
    # with denominator-only smoothing (the bug the issue describes) this would be 1
    logits = torch.full((1, 1, 4, 4), -30.0, requires_grad=True)
    loss = dice_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), mode="binary")
    assert loss.item() < 1e-3
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- naive agreement
@pytest.mark.parametrize("kind", ["dice", "tversky", "focal"])
@pytest.mark.parametrize("batch", [False, True])
def test_multiclass_index_matches_naive(kind, batch):
    x = _logits(3, 4, 5, 6)
    t = torch.randint(0, 4, (3, 5, 6))
    t[0, :2] = -100
    t[1, 3, 3] = -100
    cw = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64)
    kw = dict(class_weight=cw, batch=batch)
    if kind == "dice":
        got = dice_loss(x, t, smooth=0.5, **kw)
        ref = _naive(x, t, kind="dice", smooth=0.5, **kw)
    elif kind == "tversky":
        got = tversky_loss(x, t, alpha=0.2, beta=0.9, **kw)
        ref = _naive(x, t, kind="tversky", smooth=1.0, alpha=0.2, beta=0.9, **kw)
    else:
        got = focal_tversky_loss(x, t, **kw)
        ref = _naive(x, t, kind="focal", smooth=1.0, alpha=0.3, beta=0.7, gamma=0.75, **kw)
    assert got.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("mode", ["multiclass", "multilabel", "binary"])
@pytest.mark.parametrize("squared", [False, True])
def test_modes_match_naive_3d(mode, squared):
    c = 1 if mode == "binary" else 3
    x = _logits(2, c, 3, 4, 2)
    if mode == "multilabel":
        t = (torch.rand(2, c, 3, 4, 2) > 0.5).double()
        t[0, 1, 0] = -100
    else:
        t = torch.randint(0, 2 if mode == "binary" else c, (2, 3, 4, 2))
        t[1, 0, 0, 0] = -100
    got = dice_loss(x, t, mode=mode, squared_pred=squared, include_background=c > 1 and not squared or c == 1)
    ref = _naive(x, t, mode=mode, squared_pred=squared, include_background=c > 1 and not squared or c == 1)
    assert got.item() == pytest.approx(ref, rel=1e-10)


def test_reduction_none_and_sum_and_weight():
    x = _logits(3, 3, 4, 4)
    t = torch.randint(0, 3, (3, 4, 4))
    per = dice_loss(x, t, reduction="none")
    assert per.shape == (3,)
    for i in range(3):
        assert per[i].item() == pytest.approx(_naive(x[i:i + 1], t[i:i + 1]), rel=1e-10)
    assert dice_loss(x, t, reduction="sum").item() == pytest.approx(per.sum().item())
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    assert dice_loss(x, t, sample_weight=w, reduction="sum").item() == pytest.approx((per * w).sum().item())


def test_index_and_onehot_targets_agree_values_and_grads():
    x1 = _logits(2, 4, 6, 5)
    x2 = x1.detach().clone().requires_grad_(True)
    t = torch.randint(0, 4, (2, 6, 5))
    oh = F.one_hot(t, 4).permute(0, 3, 1, 2).double()
    for fn in (dice_loss, tversky_loss, focal_tversky_loss):
        x1.grad = x2.grad = None
        a = fn(x1, t)
        b = fn(x2, oh)
        a.backward()
        b.backward()
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(x1.grad, x2.grad)
    # squared_pred too
    x1.grad = x2.grad = None
    dice_loss(x1, t, squared_pred=True).backward()
    dice_loss(x2, oh, squared_pred=True).backward()
    torch.testing.assert_close(x1.grad, x2.grad)


# ---------------------------------------------------------------- identities
def test_tversky_half_half_is_dice_with_double_smoothing():
    x = _logits(2, 3, 7, 7)
    t = torch.randint(0, 3, (2, 7, 7))
    for s in (0.0, 1e-5, 1.0):
        tv = tversky_loss(x, t, alpha=0.5, beta=0.5, smooth=s)
        di = dice_loss(x, t, smooth=2 * s)
        torch.testing.assert_close(tv, di, rtol=1e-12, atol=1e-12)


def test_tversky_one_one_is_jaccard():
    x = _logits(2, 3, 7, 7)
    t = torch.randint(0, 3, (2, 7, 7))
    p = torch.softmax(x, 1).flatten(2)
    y = F.one_hot(t, 3).permute(0, 3, 1, 2).flatten(2).double()
    inter = (p * y).sum(-1)
    union = p.sum(-1) + y.sum(-1) - inter
    for s in (0.0, 1.0):
        jac = (1 - (inter + s) / (union + s)).mean()
        torch.testing.assert_close(tversky_loss(x, t, alpha=1.0, beta=1.0, smooth=s), jac, rtol=1e-12, atol=1e-12)


def test_focal_tversky_gamma_one_is_tversky():
    x = _logits(2, 3, 5, 5)
    t = torch.randint(0, 3, (2, 5, 5))
    torch.testing.assert_close(focal_tversky_loss(x, t, gamma=1.0), tversky_loss(x, t))


def test_ignored_pixels_do_not_matter():
    x = _logits(2, 3, 6, 6)
    t = torch.randint(0, 3, (2, 6, 6))
    t[:, :, :2] = 255
    x2 = x.detach().clone()
    x2[:, :, :, :2] = 100 * torch.randn(2, 3, 6, 2, dtype=torch.float64)
    x2.requires_grad_(True)
    a = dice_loss(x, t, ignore_index=255)
    b = dice_loss(x2, t, ignore_index=255)
    torch.testing.assert_close(a, b)
    # cropping the ignored columns gives the same loss
    c = dice_loss(x[:, :, :, 2:], t[:, :, 2:], ignore_index=255)
    torch.testing.assert_close(a, c)
    b.backward()
    assert (x2.grad[:, :, :, :2] == 0).all()


# ---------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("case", ["index", "index_ignore_sq", "probs", "onehot", "multilabel", "binary"])
def test_gradcheck(case):
    c = 1 if case == "binary" else 3
    x = _logits(2, c, 3, 3)
    kw = {}
    if case in ("onehot", "multilabel"):
        t = F.one_hot(torch.randint(0, 3, (2, 3, 3)), 3).permute(0, 3, 1, 2).double()
        if case == "multilabel":
            t = (torch.rand(2, 3, 3, 3) > 0.5).double()
            kw["mode"] = "multilabel"
    elif case == "binary":
        t = torch.randint(0, 2, (2, 3, 3))
        kw["mode"] = "binary"
    else:
        t = torch.randint(0, 3, (2, 3, 3))
        if case == "index_ignore_sq":
            t[0, 0] = -100
            kw["squared_pred"] = True
    if case == "probs":
        def fn(z):
            return dice_loss(torch.softmax(z, 1), t, from_logits=False)
    else:
        def fn(z):
            return dice_loss(z, t, **kw)
    assert torch.autograd.gradcheck(fn, (x,))
    kw.pop("squared_pred", None)
    assert torch.autograd.gradcheck(lambda z: tversky_loss(z, t, alpha=0.2, beta=0.8, batch=True, **kw), (x,))
    assert torch.autograd.gradcheck(lambda z: focal_tversky_loss(z, t, **kw), (x,))
    assert torch.autograd.gradcheck(lambda z: dice_ce_loss(z, t, lambda_ce=0.7, **kw), (x,))


# ---------------------------------------------------------------- edge cases
@pytest.mark.parametrize("fn", [dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss])
def test_edge_cases_finite(fn):
    # all pixels ignored
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.full((2, 4, 4), -100)
    loss = fn(x, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and (x.grad == 0).all()
    # a single pixel
    x = torch.randn(1, 3, 1, 1, requires_grad=True)
    loss = fn(x, torch.tensor([[[2]]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # huge logits, perfect and totally wrong predictions
    t = torch.randint(0, 3, (2, 5, 5))
    big = (F.one_hot(t, 3).permute(0, 3, 1, 2).float() * 1e4).requires_grad_(True)
    for z in (big, -big):
        loss = fn(z, t)
        (g,) = torch.autograd.grad(loss, big)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    # empty batch
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    loss = fn(x, torch.zeros(0, 4, 4, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("fn", [dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss])
def test_bf16_autocast(fn):
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randint(0, 4, (2, 8, 8))
    conv = torch.nn.Conv2d(4, 4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = conv(x)
        assert z.dtype == torch.bfloat16
        loss = fn(z, t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(conv.weight.grad).all()
    # the loss itself ran in float32 on the bf16 scores
    ref = fn(z.detach().float(), t)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_focal_tversky_perfect_prediction_no_nan():
    p = F.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).permute(0, 3, 1, 2).double().requires_grad_(True)
    t = p.detach().argmax(1)
    loss = focal_tversky_loss(p, t, from_logits=False, smooth=0.0)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    assert loss.item() == pytest.approx(1e-7 ** 0.75)


# ---------------------------------------------------------------- errors
def test_errors_name_argument_and_shape():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(2, 4, 4\)"):
        dice_loss(x, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 2\]"):
        dice_loss(x, torch.full((2, 4, 4), 3))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        dice_loss(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        dice_loss(x, torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match="one-hot, same as input"):
        dice_loss(x, torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="multilabel"):
        dice_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), mode="multilabel")
    with pytest.raises(ValueError, match=r"input must be \(N, 1, \*spatial\) in binary mode"):
        tversky_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), mode="binary")
    with pytest.raises(ValueError, match="target must be class indices in \\[0, 1\\]"):
        tversky_loss(x[:, :1], torch.full((2, 4, 4), 2), mode="binary")
    with pytest.raises(ValueError, match=r"class_weight must have one entry per class \(3\)"):
        dice_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), class_weight=torch.ones(4))
    with pytest.raises(ValueError, match="mode must be one of"):
        dice_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), mode="softmax")
    with pytest.raises(ValueError, match=r"target \(one-hot / soft labels\) must be in \[0, 1\]"):
        dice_loss(x, 2 * torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        dice_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), smooth=-1)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        focal_tversky_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), gamma=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        dice_ce_loss(x, torch.zeros(2, 4, 4, dtype=torch.long), reduction="avg")


# ---------------------------------------------------------------- dice + CE
def test_dice_ce_matches_components():
    x = _logits(3, 4, 5, 5)
    t = torch.randint(0, 4, (3, 5, 5))
    t[0, 0] = -100
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    got = dice_ce_loss(x, t, lambda_dice=0.3, lambda_ce=0.7, class_weight=w)
    ref = 0.3 * dice_loss(x, t, class_weight=w) + 0.7 * F.cross_entropy(x, t, weight=w, ignore_index=-100)
    torch.testing.assert_close(got, ref)
    # per-image "none": each image's own pixel mean
    per = dice_ce_loss(x, t, reduction="none")
    for i in range(3):
        ref_i = dice_loss(x[i:i + 1], t[i:i + 1]) + F.cross_entropy(x[i:i + 1], t[i:i + 1])
        assert per[i].item() == pytest.approx(ref_i.item(), rel=1e-10)
    # one-hot targets give the same as indices (no ignore)
    t2 = torch.randint(0, 4, (3, 5, 5))
    oh = F.one_hot(t2, 4).permute(0, 3, 1, 2).double()
    torch.testing.assert_close(dice_ce_loss(x, t2, class_weight=w), dice_ce_loss(x, oh, class_weight=w))


def test_dice_ce_binary_and_multilabel():
    x = _logits(2, 1, 4, 4)
    t = torch.randint(0, 2, (2, 4, 4))
    ref = dice_loss(x, t, mode="binary") + F.binary_cross_entropy_with_logits(x[:, 0], t.double())
    torch.testing.assert_close(dice_ce_loss(x, t, mode="binary"), ref)
    x = _logits(2, 3, 4, 4)
    y = (torch.rand(2, 3, 4, 4) > 0.5).double()
    ref = 2 * dice_loss(x, y, mode="multilabel") + F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(dice_ce_loss(x, y, mode="multilabel", lambda_dice=2.0), ref)


# ---------------------------------------------------------------- modules / registry
def test_modules_registry_state_dict():
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    w = torch.tensor([1.0, 2.0, 3.0])
    for name, fn, kw in [("dice", dice_loss, dict(smooth=0.1)), ("tversky", tversky_loss, dict(alpha=0.4)),
                         ("focal_tversky", focal_tversky_loss, dict(gamma=1.5)),
                         ("dice_ce", dice_ce_loss, dict(lambda_ce=0.2))]:
        mod = tailwise.build_loss(name, class_weight=w, **kw)
        torch.testing.assert_close(mod(x, t), fn(x, t, class_weight=w, **kw))
        fresh = tailwise.build_loss(name, class_weight=torch.ones(3), **kw)
        fresh.load_state_dict(mod.state_dict())
        torch.testing.assert_close(fresh(x, t), mod(x, t))
    assert isinstance(tailwise.DiceLoss(), tailwise.get_loss_class("dice"))
    assert "mode='multiclass'" in repr(tailwise.DiceLoss())


# ---------------------------------------------------------------- property sweeps
@given(n=st.integers(1, 3), c=st.integers(2, 5), h=st.integers(1, 6), w=st.integers(1, 6),
       alpha=st.floats(0.0, 2.0), beta=st.floats(0.0, 2.0), batch=st.booleans(), seed=st.integers(0, 10_000),
       ignore=st.booleans())
def test_property_sweep(n, c, h, w, alpha, beta, batch, seed, ignore):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.randint(0, c, (n, h, w), generator=g)
    if ignore:
        t[torch.rand(n, h, w, generator=g) < 0.3] = -100
    d = dice_loss(x, t, batch=batch)
    assert 0.0 <= d.item() <= 1.0
    tv = tversky_loss(x, t, alpha=alpha, beta=beta, batch=batch)
    ref = _naive(x, t, kind="tversky", alpha=alpha, beta=beta, smooth=1.0, batch=batch)
    assert tv.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(tversky_loss(x, t, alpha=0.5, beta=0.5, smooth=0.5, batch=batch),
                               dice_loss(x, t, smooth=1.0, batch=batch))
    ft = focal_tversky_loss(x, t, alpha=alpha, beta=beta, batch=batch)
    ft.backward()
    assert math.isfinite(ft.item()) and torch.isfinite(x.grad).all()


def test_matches_monai_when_installed():
    monai_losses = pytest.importorskip("monai.losses")
    x = torch.randn(2, 4, 6, 5, 3)
    t = torch.randint(0, 4, (2, 6, 5, 3))
    for batch in (False, True):
        ref = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=batch)(x, t.unsqueeze(1))
        torch.testing.assert_close(dice_loss(x, t, batch=batch), ref)
    ref = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, include_background=False)(
        x, t.unsqueeze(1))
    torch.testing.assert_close(dice_loss(x, t, squared_pred=True, include_background=False), ref)
    ref = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)(x, t.unsqueeze(1))
    torch.testing.assert_close(tversky_loss(x, t, smooth=1e-5), ref)
