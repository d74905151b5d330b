"""Peer options of the Dice family (issue 18): ``soft_label``, ``smooth_nr``/``smooth_dr``,
``average="micro"``, ``normalize_class_weight``, uint8/bool one-hot targets and ``dice_ce``'s
``dice_activation``.

The ``*_PEER`` cases are the inputs and expected values of MONAI's own tests
(tests/losses/test_dice_loss.py, test_tversky_loss.py, test_dice_ce_loss.py) and kornia's
(tests/losses/test_dice.py), re-expressed as tailwise calls; they must agree to 1e-4.
"""

import math

import numpy as np
import pytest
import torch

import tailwise
from tailwise.functional import dice_ce_loss, dice_loss, focal_tversky_loss, tversky_loss

T = torch.tensor

# MONAI's recurring inputs
X22 = T([[[[1.0, -1.0], [-1.0, 1.0]]]])                                           # (1, 1, 2, 2)
Y22 = T([[[[1.0, 0.0], [1.0, 1.0]]]])
X22B = T([[[[1.0, -1.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]])            # (2, 1, 2, 2)
Y22B = T([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]])
X22Z = T([[[[1.0, -0.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]])
P_SOFT = T([[[[0.3, 0.4], [0.7, 0.9]]], [[[1.0, 0.1], [0.5, 0.3]]]])              # (2, 1, 2, 2)
X23 = T([[[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (2, 2, 3)
T23 = T([[1, 0, 0], [1, 1, 0]])                                                   # MONAI's (2, 1, 3) labels
ONEHOT_X = T([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # (2, 2, 3)
ONEHOT_T = T([[0, 0, 1], [0, 1, 0]])


def onehot(t, c, dtype=torch.uint8):
    return torch.nn.functional.one_hot(t, c).movedim(-1, 1).to(dtype)


def close(a, b, tol=1e-4):
    def arr(v):
        return np.asarray(v.detach() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    np.testing.assert_allclose(arr(a), arr(b), rtol=tol, atol=tol)


def per_class(fn, *args, c, **kw):
    """The per-class losses, by a one-hot ``class_weight`` (normalised: exactly that class's loss)."""
    return torch.stack([fn(*args, class_weight=torch.eye(c)[k], reduction="none", **kw) for k in range(c)], -1)


# ---------------------------------------------------------------- MONAI DiceLoss
def test_monai_dice_sigmoid_and_separate_smoothing():
    # MONAI: DiceLoss(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6) -> 0.307576
    close(dice_loss(X22, Y22, mode="multilabel", smooth_nr=1e-6, smooth_dr=1e-6), 0.307576)
    close(dice_loss(X22, Y22, mode="multilabel", smooth=1e-6), 0.307576)  # the shorthand
    close(dice_loss(X22B, Y22B, mode="multilabel", smooth_nr=1e-4, smooth_dr=1e-4), 0.416657)
    close(dice_loss(X22, Y22, mode="multilabel", squared_pred=True), 0.178337)


def test_monai_dice_soft_label():
    kw = dict(mode="multilabel", from_logits=False, smooth_nr=1e-4, smooth_dr=1e-4)
    close(dice_loss(P_SOFT, P_SOFT, soft_label=True, **kw), 0.0)
    close(dice_loss(P_SOFT, P_SOFT, soft_label=False, **kw), 0.307773)


def test_monai_dice_onehot_probabilities_without_background():
    # to_onehot_y=True, include_background=False, smooth_nr=smooth_dr=0, no activation -> 0
    kw = dict(from_logits=False, include_background=False, smooth_nr=0.0, smooth_dr=0.0)
    close(dice_loss(ONEHOT_X, ONEHOT_T, **kw), 0.0)
    close(dice_loss(ONEHOT_X, onehot(ONEHOT_T, 2), **kw), 0.0)
    close(dice_loss(ONEHOT_X, onehot(ONEHOT_T, 2, torch.bool), **kw), 0.0)


def test_monai_dice_to_onehot_sigmoid_and_softmax():
    y = onehot(T23, 2)  # to_onehot_y=True as a uint8 one-hot target
    kw = dict(smooth_nr=1e-4, smooth_dr=1e-4)
    close(dice_loss(X23, y, mode="multilabel", **kw), 0.435050)
    close(per_class(dice_loss, X23, y, c=2, mode="multilabel", **kw), [[0.296529, 0.415136], [0.599976, 0.428559]])
    close(dice_loss(X23, T23, **kw), 0.383713)  # softmax=True
    # MONAI's "sum" adds the N x C class losses; tailwise's adds the N per-image class means
    close(dice_loss(X23, T23, reduction="sum", **kw) * 2, 1.534853)


def test_monai_dice_other_act_via_dice_ce_raw_scores():
    """MONAI ``DiceLoss(other_act=f)`` is ``dice_ce_loss(f(x), ..., dice_activation="none", lambda_ce=0)``."""
    def raw(x, t, **kw):
        mode = "multilabel" if x.shape == t.shape else "multiclass"
        return dice_ce_loss(x, t, mode=mode, dice_activation="none", lambda_ce=0.0, **kw)

    close(raw(torch.tanh(X22B), Y22B, smooth_nr=1e-4, smooth_dr=1e-4), 0.999963)
    close(raw(torch.tanh(X22Z), Y22B, smooth_nr=1e-4, smooth_dr=1e-4, batch=True), 0.774718)
    close(raw(torch.tanh(X22Z), Y22B, smooth_nr=0.0, smooth_dr=1e-4, batch=True), 0.774733)
    close(raw(torch.tanh(X22Z), Y22B, smooth_nr=0.0, smooth_dr=1e-4, batch=False), 0.840058)
    ls = torch.log_softmax(X23, 1)
    close(raw(ls, T23, smooth_nr=1e-4, smooth_dr=1e-4), -8.522593)
    # weight=(0, 1): MONAI multiplies each class loss by its weight, then the plain mean
    close(raw(ls, T23, smooth_nr=1e-4, smooth_dr=1e-4, class_weight=T([0.0, 1.0]), normalize_class_weight=False),
          -8.268515)


# ---------------------------------------------------------------- MONAI TverskyLoss
def test_monai_tversky_cases():
    ml = dict(mode="multilabel", alpha=0.5, beta=0.5)
    close(tversky_loss(X22, Y22, smooth_nr=1e-6, smooth_dr=1e-6, **ml), 0.307576)
    close(tversky_loss(X22B, Y22B, smooth_nr=1e-4, smooth_dr=1e-4, **ml), 0.416657)
    kw = dict(ml, from_logits=False, smooth_nr=1e-4, smooth_dr=1e-4)
    close(tversky_loss(P_SOFT, P_SOFT, soft_label=True, **kw), 0.0)
    close(tversky_loss(P_SOFT, P_SOFT, soft_label=False, **kw), 0.307773)
    prob = dict(alpha=0.5, beta=0.5, from_logits=False, include_background=False)
    close(tversky_loss(ONEHOT_X, ONEHOT_T, smooth_nr=0.0, smooth_dr=0.0, **prob), 0.0)
    close(tversky_loss(ONEHOT_X, ONEHOT_T, smooth_nr=0.0, smooth_dr=1e-3, **prob), 0.000999)
    y = onehot(T23, 2)
    close(tversky_loss(X23, y, smooth_nr=1e-4, smooth_dr=1e-4, **ml), 0.435050)
    close(tversky_loss(X23, y, smooth=1e-5, batch=True, **ml), 0.422979)
    close(tversky_loss(X23, y, smooth_nr=1e-4, smooth_dr=1e-4, reduction="sum", **ml) * 2, 1.74013)
    sm = dict(alpha=0.5, beta=0.5, smooth_nr=1e-4, smooth_dr=1e-4)
    close(tversky_loss(X23, T23, **sm), 0.383713)
    close(per_class(tversky_loss, X23, T23, c=2, **sm), [[0.210961, 0.295339], [0.599952, 0.428547]])
    one = dict(mode="multilabel", smooth_nr=1e-6, smooth_dr=1e-6)
    close(tversky_loss(X22, Y22, alpha=0.3, beta=0.7, **one), 0.3589)
    close(tversky_loss(X22, Y22, alpha=0.7, beta=0.3, **one), 0.247366)


# ---------------------------------------------------------------- MONAI DiceCELoss
def test_monai_dice_ce_cases():
    # DiceCELoss(to_onehot_y=True): no Dice activation, softmax CE; 0.3133 = log(1 + e) - 1
    close(dice_ce_loss(ONEHOT_X, ONEHOT_T, dice_activation="none"), 0.3133)
    close(dice_ce_loss(ONEHOT_X, ONEHOT_X, dice_activation="none"), 0.3133)           # one-hot float target
    close(dice_ce_loss(ONEHOT_X, onehot(ONEHOT_T, 2), dice_activation="none"), 0.3133)  # uint8 one-hot target
    x = T([[[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    kw = dict(dice_activation="none", include_background=False, normalize_class_weight=False)
    close(dice_ce_loss(x, ONEHOT_T, class_weight=T([1.0, 1.0]), **kw), 0.2088)
    close(dice_ce_loss(x, ONEHOT_T, class_weight=T([1.0, 1.0]), lambda_ce=2.0, **kw), 0.4176)
    close(dice_ce_loss(x, ONEHOT_T, class_weight=T([0.0, 1.0]), **kw), 0.3133)


def test_monai_dice_ce_module_mapping():
    crit = tailwise.build_loss("dice_ce", dice_activation="none", class_weight=T([0.0, 1.0]),
                               include_background=False, normalize_class_weight=False)
    x = T([[[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    close(crit(x, ONEHOT_T), 0.3133)
    assert "dice_activation='none'" in repr(crit)
    sd = crit.state_dict()
    crit2 = tailwise.DiceCELoss(dice_activation="none", class_weight=T([5.0, 5.0]), include_background=False,
                                normalize_class_weight=False)
    crit2.load_state_dict(sd)
    close(crit2(x, ONEHOT_T), 0.3133)


# ---------------------------------------------------------------- kornia dice_loss
EPS = 1e-8
KORNIA = dict(smooth_nr=0.0, smooth_dr=EPS)  # kornia: 1 - 2 I / (card + eps)


def test_kornia_micro_averaging():
    logits = torch.zeros(1, 2, 4, 1)
    logits[:, 0, 0:3] = 10.0
    logits[:, 0, 3:4] = 1.0
    logits[:, 1, 0:3] = 1.0
    logits[:, 1, 3:4] = 10.0
    labels = torch.zeros(2, 4, 1, dtype=torch.int64)  # kornia broadcasts the (1, ...) logits to 2 images
    e1, e10 = math.exp(1.0), math.exp(10.0)
    inter = (3.0 * e10 + e1) / (e1 + e10)
    expected = 1.0 - 2.0 * inter / (8.0 + EPS)
    close(dice_loss(logits.expand(2, -1, -1, -1), labels, average="micro", **KORNIA), expected)


def test_kornia_macro_averaging():
    logits = torch.zeros(1, 2, 1, 4)
    logits[:, 0, :, 0:3] = 10.0
    logits[:, 0, :, 3:4] = 1.0
    logits[:, 1, :, 0:3] = 1.0
    logits[:, 1, :, 3:4] = 10.0
    labels = torch.zeros(2, 1, 4, dtype=torch.int64)
    e1, e10 = math.exp(1.0), math.exp(10.0)
    i1 = (3.0 * e10 + e1) / (e1 + e10)
    c1 = 4.0 + i1
    c2 = (e10 + 3.0 * e1) / (e1 + e10)
    expected = ((1.0 - 2.0 * i1 / (c1 + EPS)) + (1.0 - 0.0 / (c2 + EPS))) / 2.0
    close(dice_loss(logits.expand(2, -1, -1, -1), labels, average="macro", **KORNIA), expected)


@pytest.mark.parametrize("avg", ["micro", "macro"])
def test_kornia_weights(avg):
    logits = torch.zeros(4, 3, 1, 4)
    logits[:, 0, :, 0] = 100.0
    logits[:, 2, :, 1:] = 100.0
    labels = T([0, 1, 2, 2]).expand((4, 1, -1))
    for w, expected in (([1.0, 0.0, 0.0], 0.0), ([0.0, 1.0, 0.0], 1.0), ([0.0, 0.0, 1.0], 0.2)):
        close(dice_loss(logits, labels, average=avg, class_weight=T(w), **KORNIA), expected)
    # non-binary weights, per image: class 0 right on its pixel, class 1's pixel predicted as 2.
    # macro: kornia's test value. micro: kornia 0.9.0's 2 sum(w p y) / sum(w (p + y)) (its test
    # still wrote kornia 0.8's (w tp)^2 intersection, which 0.9.0's code no longer computes)
    expected = 0.7 if avg == "macro" else 1.0 - 2.0 * (0.3 * 1) / (0.3 * (2 + 0) + 0.7 * (0 + 1) + EPS)
    close(dice_loss(logits, labels, average=avg, class_weight=T([0.3, 0.7, 0.0]), **KORNIA), expected)


@pytest.mark.parametrize("ignore_index", [-100, 255])
def test_kornia_micro_ignore_index(ignore_index):
    logits = torch.zeros(2, 2, 1, 4)
    logits[:, 0, :, 0] = 100.0
    logits[:, 1, :, 1:] = 100.0
    labels = torch.zeros(2, 1, 4, dtype=torch.int64)
    labels[..., 2:] = ignore_index
    close(dice_loss(logits, labels, average="micro", ignore_index=ignore_index, **KORNIA), 0.5)


def test_kornia_all_zeros():
    logits = torch.zeros(2, 3, 1, 2)
    logits[:, 0] = 10.0
    logits[:, 1] = 1.0
    logits[:, 2] = 1.0
    labels = torch.zeros(2, 1, 2, dtype=torch.int64)
    close(dice_loss(logits, labels, average="micro", **KORNIA), 0.0, tol=1e-3)  # kornia's own tolerance


# ---------------------------------------------------------------- independent naive reference
def _naive(p, y, m=None, *, kind="dice", soft_label=False, average="macro", w=None, normalize=True,
           s_nr=1e-5, s_dr=1e-5, alpha=0.5, beta=0.5, include_background=True):
    """float64 numpy: p, y (N, C, L) already activated, m an optional 0/1 mask; per-image losses."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    m = np.ones_like(p) if m is None else np.asarray(m, np.float64)
    p, y = p * m, y * m
    c = p.shape[1]
    w = np.ones(c) if w is None else np.asarray(w, np.float64)
    if not include_background:
        p, y, w = p[:, 1:], y[:, 1:], w[1:]
    if soft_label:
        tp = ((np.abs(p) + np.abs(y) - np.abs(p - y)) / 2).sum(-1)
        sp, sy = np.abs(p).sum(-1), np.abs(y).sum(-1)
    else:
        tp, sp, sy = (p * y).sum(-1), p.sum(-1), y.sum(-1)
    if average == "micro":  # every class's sums counted w_c times, then pooled
        tp, sp, sy = ((v * w).sum(-1, keepdims=True) for v in (tp, sp, sy))
    if kind == "dice":
        loss = 1 - (2 * tp + s_nr) / (sp + sy + s_dr)
    else:
        loss = 1 - (tp + s_nr) / (tp + alpha * (sp - tp) + beta * (sy - tp) + s_dr)
    if average == "micro":
        return loss[:, 0]
    if normalize:
        return (loss * w).sum(-1) / w.sum()
    return (loss * w).mean(-1)


def _inputs(seed=0, n=3, c=4, length=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, length, generator=g, dtype=torch.float64)
    y = torch.rand(n, c, length, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("opts", [dict(soft_label=True), dict(average="micro"),
                                  dict(average="micro", soft_label=True, w=[0.5, 2.0, 0.0, 1.0]),
                                  dict(average="micro", w=[0.5, 2.0, 0.0, 1.0], include_background=False),
                                  dict(normalize=False, w=[0.5, 2.0, 0.0, 1.0]),
                                  dict(normalize=False, w=[0.5, 2.0, 0.0, 1.0], include_background=False),
                                  dict(s_nr=0.0, s_dr=0.3), dict(s_nr=0.7, s_dr=0.0, soft_label=True)])
def test_agrees_with_naive_reference_on_soft_targets(kind, opts):
    x, y = _inputs()
    p = torch.sigmoid(x)
    ref = _naive(p.numpy(), y.numpy(), kind=kind, **opts)
    w = opts.pop("w", None)
    kw = dict(mode="multilabel", smooth_nr=opts.pop("s_nr", 1e-5), smooth_dr=opts.pop("s_dr", 1e-5),
              normalize_class_weight=opts.pop("normalize", True), reduction="none",
              class_weight=None if w is None else T(w, dtype=torch.float64), **opts)
    fn = dice_loss if kind == "dice" else lambda *a, **k: tversky_loss(*a, alpha=0.5, beta=0.5, **k)
    close(fn(x, y, **kw), ref, tol=1e-10)


def test_soft_label_with_ignore_mask_and_raw_scores():
    x, y = _inputs(1)
    t = torch.randint(0, 4, (3, 7), generator=torch.Generator().manual_seed(2))
    t[0, :3] = -100
    m = (t != -100).double().unsqueeze(1).expand(-1, 4, -1).numpy()
    oh = torch.nn.functional.one_hot(t.clamp_min(0), 4).movedim(-1, 1).double().numpy()
    # raw scores (dice_activation="none") with soft_label and class indices: |p| and |p - y| need the one-hot
    got = dice_ce_loss(x, t, dice_activation="none", soft_label=True, lambda_ce=0.0, reduction="none")
    close(got, _naive(x.numpy(), oh, m, soft_label=True), tol=1e-10)
    got = dice_ce_loss(x, t, dice_activation="none", soft_label=False, lambda_ce=0.0, reduction="none")
    close(got, _naive(x.numpy(), oh, m), tol=1e-10)
    # dense soft targets with an ignored element
    yd = y.clone()
    yd[1, 2, 3] = -100
    md = (yd != -100).double().numpy()
    got = tversky_loss(x, yd, mode="multilabel", alpha=0.5, beta=0.5, soft_label=True, reduction="none",
                       smooth=1e-5)
    close(got, _naive(torch.sigmoid(x).numpy(), yd.clamp_min(0).numpy(), md, kind="tversky", soft_label=True),
          tol=1e-10)


@pytest.mark.parametrize("act", ["softmax", "sigmoid", "none"])
@pytest.mark.parametrize("dense", [False, True])
def test_dice_activation_agrees_with_naive(act, dense):
    x, _ = _inputs(3)
    t = torch.randint(0, 4, (3, 7), generator=torch.Generator().manual_seed(4))
    t[2, 1] = -100
    keep = (t != -100)
    oh = torch.nn.functional.one_hot(t.clamp_min(0), 4).movedim(-1, 1).double()
    p = {"softmax": torch.softmax(x, 1), "sigmoid": torch.sigmoid(x), "none": x}[act].numpy()
    m = keep.double().unsqueeze(1).expand(-1, 4, -1).numpy()
    if dense:
        tgt = torch.where(keep.unsqueeze(1), oh, torch.full_like(oh, -100.0))
    else:
        tgt = t
    dice = _naive(p, oh.numpy(), m, s_nr=0.1, s_dr=0.2)
    ce = torch.nn.functional.cross_entropy(x, t, ignore_index=-100).item()
    got = dice_ce_loss(x, tgt, dice_activation=act, smooth_nr=0.1, smooth_dr=0.2)
    close(got, dice.mean() + ce, tol=1e-10)


# ---------------------------------------------------------------- invariances
def test_soft_label_equals_product_form_for_hard_labels():
    x = torch.randn(2, 3, 5, 4)
    t = torch.randint(0, 3, (2, 5, 4))
    t[0, 0] = -100
    oh = onehot(t.clamp_min(0), 3, torch.float32)
    for fn in (dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss):
        base = fn(x, t, reduction="none")
        close(fn(x, t, soft_label=True, reduction="none"), base, tol=1e-6)
        xs = x[1:]
        close(fn(xs, oh[1:], soft_label=True, reduction="none"), fn(xs, t[1:], reduction="none"), tol=1e-6)


def test_micro_with_one_class_is_macro_and_unit_weights_unnormalised_are_default():
    x = torch.randn(3, 1, 6)
    t = torch.randint(0, 2, (3, 6))
    for fn in (dice_loss, tversky_loss, focal_tversky_loss):
        close(fn(x, t, mode="binary", average="micro"), fn(x, t, mode="binary"), tol=1e-6)
    x = torch.randn(3, 4, 6)
    t = torch.randint(0, 4, (3, 6))
    for fn in (dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss):
        close(fn(x, t, class_weight=torch.ones(4), normalize_class_weight=False), fn(x, t), tol=1e-6)
        # unnormalised weights scale the (Dice) loss; normalised ones do not
        close(fn(x, t, class_weight=torch.full((4,), 3.0)), fn(x, t), tol=1e-6)
    close(dice_loss(x, t, class_weight=torch.full((4,), 3.0), normalize_class_weight=False), 3 * dice_loss(x, t),
          tol=1e-6)


def test_smooth_shorthand_and_defaults():
    x = torch.randn(2, 3, 5)
    t = torch.randint(0, 3, (2, 5))
    for fn in (dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss):
        assert torch.equal(fn(x, t, smooth=0.25), fn(x, t, smooth_nr=0.25, smooth_dr=0.25))
        assert torch.equal(fn(x, t, smooth=0.25, smooth_nr=0.1), fn(x, t, smooth_nr=0.1, smooth_dr=0.25))
    # an absent, unpredicted class: smoothing only the denominator scores the maximum loss 1
    probs = T([[[1.0, 1.0], [0.0, 0.0]]])
    close(per_class(dice_loss, probs, T([[0, 0]]), c=2, from_logits=False, smooth_nr=0.0, smooth_dr=1e-5)[0, 1], 1.0)
    close(per_class(dice_loss, probs, T([[0, 0]]), c=2, from_logits=False)[0, 1], 0.0)


def test_modules_and_registry_match_functional():
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    w = T([1.0, 2.0, 0.5])
    opts = dict(smooth_nr=0.0, smooth_dr=1e-3, soft_label=True, class_weight=w, normalize_class_weight=False)
    for name, fn in (("dice", dice_loss), ("tversky", tversky_loss), ("focal_tversky", focal_tversky_loss),
                     ("dice_ce", dice_ce_loss)):
        assert torch.equal(tailwise.build_loss(name, **opts)(x, t), fn(x, t, **opts))
        micro = dict(average="micro", class_weight=w, smooth=0.5)
        assert torch.equal(tailwise.build_loss(name, **micro)(x, t), fn(x, t, **micro))
    crit = tailwise.DiceLoss(smooth=0.5, smooth_dr=0.1)
    assert (crit.smooth_nr, crit.smooth_dr) == (0.5, 0.1)


# ---------------------------------------------------------------- gradcheck float64
@pytest.mark.parametrize("fn", [dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss])
def test_gradcheck_new_options(fn):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 5), generator=g)
    t[0, 1] = -100
    soft = torch.rand(2, 3, 5, generator=g, dtype=torch.float64)
    w = T([0.5, 2.0, 1.0], dtype=torch.float64)
    for kw in (dict(soft_label=True, smooth_nr=0.0, smooth_dr=0.1), dict(average="micro", class_weight=w),
               dict(average="micro", soft_label=True, class_weight=w, batch=True),
               dict(class_weight=w, normalize_class_weight=False, include_background=False)):
        assert torch.autograd.gradcheck(lambda z: fn(z, t, **kw), (x,))
        assert torch.autograd.gradcheck(lambda z: fn(z, soft, mode="multilabel", **kw), (x,))


@pytest.mark.parametrize("act", ["softmax", "sigmoid", "none"])
def test_gradcheck_dice_activation(act):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 5), generator=g)
    t[1, 0] = -100
    assert torch.autograd.gradcheck(lambda z: dice_ce_loss(z, t, dice_activation=act, smooth=1.0), (x,))
    assert torch.autograd.gradcheck(
        lambda z: dice_ce_loss(z, t, dice_activation=act, soft_label=True, smooth=1.0), (x,))


# ---------------------------------------------------------------- errors and edge cases
def test_bad_option_values_name_the_argument():
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    for fn in (dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss):
        with pytest.raises(TypeError, match="soft_label must be a bool"):
            fn(x, t, soft_label="yes")
        with pytest.raises(ValueError, match="average must be one of"):
            fn(x, t, average="weighted")
        with pytest.raises(TypeError, match="normalize_class_weight must be a bool"):
            fn(x, t, normalize_class_weight=0)
        with pytest.raises(ValueError, match="smooth_nr"):
            fn(x, t, smooth_nr=-1.0)
        with pytest.raises(ValueError, match="smooth_dr"):
            fn(x, t, smooth_dr=float("nan"))
        with pytest.raises(ValueError, match="normalize_class_weight=False has no meaning with average"):
            fn(x, t, average="micro", normalize_class_weight=False)
        with pytest.raises(ValueError, match="class_weight must be non-negative"):
            fn(x, t, class_weight=T([1.0, -1.0, 1.0]), normalize_class_weight=False)
        with pytest.raises(ValueError, match="class_weight must be non-negative"):
            fn(x, t, class_weight=T([1.0, -1.0, 1.0]), average="micro")
        with pytest.raises(TypeError, match="floating, uint8 or bool"):
            fn(x, torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="dice_activation must be one of"):
        dice_ce_loss(x, t, dice_activation="relu")
    with pytest.raises(ValueError, match="dice_activation must be one of"):
        tailwise.DiceCELoss(dice_activation="tanh")
    with pytest.raises(ValueError, match="dice_activation=\"softmax\" needs at least 2 channels"):
        dice_ce_loss(x[:, :1], torch.randint(0, 2, (2, 4)), mode="binary", dice_activation="softmax")
    with pytest.raises(TypeError, match="soft_label must be a bool"):
        tailwise.TverskyLoss(soft_label=1)
    with pytest.raises(ValueError, match="average must be one of"):
        tailwise.DiceLoss(average="samples")
    # uint8 one-hot values are still range-checked
    bad = torch.zeros(2, 3, 4, dtype=torch.uint8)
    bad[0, 0, 0] = 2
    with pytest.raises(ValueError, match=r"target \(one-hot / soft labels\) must be in \[0, 1\]"):
        dice_loss(x, bad)


def test_edge_cases_stay_finite():
    x = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.full((2, 4), -100)
    for kw in (dict(soft_label=True), dict(average="micro", class_weight=T([1.0, 0.0, 2.0])),
               dict(class_weight=torch.zeros(3), normalize_class_weight=False), dict(smooth_nr=0.0)):
        for fn in (dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss):
            loss = fn(x, t, **kw)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
            x.grad = None
    empty = torch.randn(0, 3, 4, requires_grad=True)
    loss = dice_loss(empty, torch.zeros(0, 4, dtype=torch.long), soft_label=True, average="micro")
    assert loss.item() == 0.0 and loss.requires_grad
    huge = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    loss = dice_ce_loss(huge, T([[0, 1]]), dice_activation="sigmoid", soft_label=True)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(huge.grad).all()


def test_bf16_autocast_soft_label_micro():
    x = torch.randn(2, 3, 8, 8)
    y = torch.rand(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = dice_loss(x.bfloat16(), y, mode="multilabel", soft_label=True, average="micro")
    assert a.dtype == torch.float32
    close(a, dice_loss(x.bfloat16().float(), y, mode="multilabel", soft_label=True, average="micro"), tol=1e-3)


def test_kernel_route(monkeypatch):
    """Index targets with soft_label keep the fused op (same statistics); raw scores with soft_label
    need |p| and |p - y| of the one-hot target, which the op does not compute: they must not reach it."""
    import tailwise.segmentation._overlap as ov
    calls = []
    real = ov.dispatch

    def spy(op, *args, **kw):
        calls.append((op, args[4]))  # from_logits as the op sees it
        return real(op, *args, **kw)

    monkeypatch.setattr(ov, "dispatch", spy)
    x = torch.randn(2, 3, 5)
    t = torch.randint(0, 3, (2, 5))
    dice_loss(x, t, soft_label=True)
    assert calls == [("overlap_index", True)]
    calls.clear()
    dice_ce_loss(x, t, dice_activation="sigmoid")  # sigmoid probabilities against the one-hot
    assert calls == [("overlap_index", False)]
    calls.clear()
    dice_ce_loss(x, t, dice_activation="none", soft_label=True)
    assert calls == []


# ---------------------------------------------------------------- MONAI GeneralizedDiceLoss
def test_monai_generalized_dice_soft_label():
    from tailwise.functional import generalized_dice_loss
    kw = dict(mode="multilabel", from_logits=False, smooth_nr=1e-4, smooth_dr=1e-4)
    close(generalized_dice_loss(P_SOFT, P_SOFT, soft_label=True, **kw), 0.0)
    close(generalized_dice_loss(P_SOFT, P_SOFT, soft_label=False, **kw), 0.307748)
    crit = tailwise.build_loss("generalized_dice", soft_label=True, **{k: v for k, v in kw.items()})
    close(crit(P_SOFT, P_SOFT), 0.0)
    with pytest.raises(TypeError, match="soft_label must be a bool"):
        generalized_dice_loss(P_SOFT, P_SOFT, soft_label=None, **kw)


# ---------------------------------------------------------------- accelerator paths on CPU
NEW_OPTIONS = [dict(soft_label=True, smooth_nr=0.0, smooth_dr=0.1),
               dict(average="micro", class_weight=T([0.5, 2.0, 1.0])),
               dict(class_weight=T([0.5, 0.0, 1.0]), normalize_class_weight=False, include_background=False)]


@pytest.mark.parametrize("fn", [dice_loss, tversky_loss, focal_tversky_loss, dice_ce_loss])
@pytest.mark.parametrize("kw", NEW_OPTIONS)
def test_device_paths_compile_and_no_host_reads(fn, kw):
    """The new options on the code paths CUDA takes: same value and gradient, no host read of
    tensor values, and ``torch.compile(fullgraph=True)`` traces them."""
    from test_contract import _no_host_reads
    from tailwise._validation import _device_paths

    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    t = torch.randint(0, 3, (2, 4, 5))
    t[0, 0] = -100
    soft = torch.rand(2, 3, 4, 5)
    for tgt, extra in ((t, {}), (soft, dict(mode="multilabel"))):
        want = fn(x, tgt, **kw, **extra)
        (gw,) = torch.autograd.grad(want, x)
        with _device_paths():
            fn(x, tgt, **kw, **extra)
            with _no_host_reads():
                got = fn(x, tgt, **kw, **extra)
                (gg,) = torch.autograd.grad(got, x)
        close(got, want, tol=1e-6)
        close(gg, gw, tol=1e-6)
        torch._dynamo.reset()  # a fresh trace: the same lambda with new closures would recompile as dynamic
        compiled = torch.compile(lambda z, y: fn(z, y, **kw, **extra), fullgraph=True, backend="aot_eager")
        close(compiled(x, tgt), want, tol=1e-6)
    if fn is dice_ce_loss:
        for act in ("sigmoid", "none"):
            want = fn(x, t, dice_activation=act, soft_label=True)
            with _device_paths(), _no_host_reads():
                close(fn(x, t, dice_activation=act, soft_label=True), want, tol=1e-6)


def test_device_side_assert_for_negative_unnormalised_weight():
    from tailwise._validation import _device_paths
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    with _device_paths():
        with pytest.raises(RuntimeError, match="class_weight must be non-negative"):
            dice_loss(x, t, class_weight=T([1.0, -1.0, 1.0]), normalize_class_weight=False)
        with pytest.raises(RuntimeError, match="class_weight must be non-negative"):
            tversky_loss(x, t, class_weight=T([1.0, -1.0, 1.0]), average="micro")
