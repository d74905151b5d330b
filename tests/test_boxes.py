"""Box-regression family: values, naive float64 references, gradients, invariances, edge cases."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tailwise
import tailwise.functional as F
from tailwise.boxes import box_convert
from tailwise.boxes._fused import fused_box_loss

LOSSES = ["iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "cdiou"]
FUSED = ["giou", "diou", "ciou"]
EPS = 1e-7


# ------------------------------------------------------------------ naive per-box references
def _naive_one(name, p, t, eps=EPS, **kw):
    """Plain-Python float64 loss of one xyxy pair, written from the papers' formulas."""
    x1, y1, x2, y2 = p
    X1, Y1, X2, Y2 = t
    w, h, W, H = x2 - x1, y2 - y1, X2 - X1, Y2 - Y1
    iw = max(0.0, min(x2, X2) - max(x1, X1))
    ih = max(0.0, min(y2, Y2) - max(y1, Y1))
    inter = iw * ih
    union = w * h + W * H - inter + eps
    iou = inter / union
    cw = max(x2, X2) - min(x1, X1)
    ch = max(y2, Y2) - min(y1, Y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((x1 + x2) / 2 - (X1 + X2) / 2) ** 2 + ((y1 + y2) / 2 - (Y1 + Y2) / 2) ** 2
    if name == "iou":
        return 1 - iou if kw.get("mode", "linear") == "linear" else -math.log(max(iou, eps))
    if name == "giou":
        area_c = cw * ch + eps
        return 1 - iou + (area_c - union) / area_c
    if name == "diou":
        return 1 - iou + rho2 / c2
    if name == "ciou":
        v = 4 / math.pi ** 2 * (math.atan2(W, H) - math.atan2(w, h)) ** 2
        alpha = v / (1 - iou + v + eps)
        return 1 - iou + rho2 / c2 + alpha * v
    if name in ("eiou", "focal_eiou"):
        return 1 - iou + rho2 / c2 + (w - W) ** 2 / (cw ** 2 + eps) + (h - H) ** 2 / (ch ** 2 + eps)
    if name == "cdiou":
        corners = [((x1, y1), (X1, Y1)), ((x2, y1), (X2, Y1)), ((x2, y2), (X2, Y2)), ((x1, y2), (X1, Y2))]
        d = sum(math.hypot(a[0] - b[0], a[1] - b[1]) for a, b in corners)
        return 1 - iou + kw.get("lambda_", 1.0) * d / (4 * math.sqrt(c2))
    raise KeyError(name)


def _naive_iou(p, t, eps=EPS):
    return 1 - _naive_one("iou", p, t, eps)


def naive_loss(name, P, T, reduction="mean", **kw):
    vals = [_naive_one(name, p, t, **kw) for p, t in zip(P.tolist(), T.tolist())]
    if name == "focal_eiou":
        f = [_naive_iou(p, t) ** kw.get("gamma", 0.5) for p, t in zip(P.tolist(), T.tolist())]
        if reduction == "mean":  # all IoU = 0: every focal weight and the loss are 0
            return sum(a * b for a, b in zip(f, vals)) / sum(f) if sum(f) > 0 else 0.0
        vals = [a * b for a, b in zip(f, vals)]
    if reduction == "none":
        return torch.tensor(vals, dtype=torch.float64)
    return sum(vals) / len(vals) if reduction == "mean" else sum(vals)


def loss_fn(name):
    return getattr(F, f"{name}_loss")


def rand_boxes(n, gen=None, dtype=torch.float64, scale=10.0):
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * scale
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * scale * 0.5 + 0.05
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------ hand-computed values
def test_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    # I = 2, U = 6, C = 6 (3x2, same as union), centres 1 apart, diagonal^2 = 9 + 4
    assert F.iou_loss(a, b).item() == pytest.approx(1 - 1 / 3, abs=1e-6)
    assert F.iou_loss(a, b, mode="log").item() == pytest.approx(math.log(3), abs=1e-6)
    assert F.giou_loss(a, b).item() == pytest.approx(2 / 3, abs=1e-6)
    assert F.diou_loss(a, b).item() == pytest.approx(2 / 3 + 1 / 13, abs=1e-6)
    assert F.ciou_loss(a, b).item() == pytest.approx(2 / 3 + 1 / 13, abs=1e-6)  # same aspect: v = 0
    assert F.eiou_loss(a, b).item() == pytest.approx(2 / 3 + 1 / 13, abs=1e-6)  # same w, h
    # corners each 1 apart: 4 / (4 * sqrt(13))
    assert F.cdiou_loss(a, b).item() == pytest.approx(2 / 3 + 1 / math.sqrt(13), abs=1e-6)
    # disjoint unit boxes 2 apart: IoU 0, C = 3, union 2
    c = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    d = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert F.giou_loss(c, d).item() == pytest.approx(1 + 1 / 3, abs=1e-6)
    assert F.diou_loss(c, d).item() == pytest.approx(1 + 4 / 10, abs=1e-6)
    # wide vs square: IoU 1/2, rho^2 = 1/4, c^2 = 5, v = 4/pi^2 (pi/4 - atan 2)^2
    e = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    v = 4 / math.pi ** 2 * (math.pi / 4 - math.atan(2)) ** 2
    assert F.ciou_loss(e, c).item() == pytest.approx(0.5 + 0.05 + v * v / (0.5 + v), abs=1e-6)
    assert F.eiou_loss(e, c).item() == pytest.approx(0.5 + 0.05 + 1 / 4, abs=1e-6)


def test_pairwise_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou = tailwise.box_iou(a, b)
    assert iou.shape == (2, 3)
    torch.testing.assert_close(iou[0], torch.tensor([1 / 3, 0.0, 1.0]), atol=1e-6, rtol=0)
    giou = tailwise.generalized_box_iou(a, b)
    assert giou[1, 1].item() == pytest.approx(-1 / 3, abs=1e-6)
    diou = tailwise.distance_box_iou(a, b)
    assert diou[1, 1].item() == pytest.approx(-0.4, abs=1e-6)
    # pairwise matrices agree with the aligned losses, pair by pair
    for i in range(2):
        for j in range(3):
            assert 1 - giou[i, j].item() == pytest.approx(F.giou_loss(a[i:i + 1], b[j:j + 1]).item(), abs=1e-6)
            assert 1 - diou[i, j].item() == pytest.approx(F.diou_loss(a[i:i + 1], b[j:j + 1]).item(), abs=1e-6)
    assert tailwise.box_iou(a, b[:0]).shape == (2, 0)


# ------------------------------------------------------------------ naive agreement
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_naive_float64(name, reduction):
    g = torch.Generator().manual_seed(1)
    P, T = rand_boxes(64, g), rand_boxes(64, g)
    T[:8] = P[:8]  # identical pairs
    T[8:16, :2] = P[8:16, :2] + 20  # disjoint pairs
    T[8:16, 2:] = T[8:16, :2] + 1
    got = loss_fn(name)(P, T, reduction=reduction)
    want = naive_loss(name, P, T, reduction)
    if reduction == "none":
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    else:
        assert got.item() == pytest.approx(want, abs=1e-10, rel=1e-10)


def test_iou_log_mode_matches_naive():
    g = torch.Generator().manual_seed(2)
    P, T = rand_boxes(32, g), rand_boxes(32, g)
    got = F.iou_loss(P, T, mode="log", reduction="none")
    torch.testing.assert_close(got, naive_loss("iou", P, T, "none", mode="log"), atol=1e-9, rtol=1e-9)
    assert torch.isfinite(got).all()  # disjoint pairs clamp at eps


@pytest.mark.parametrize("name", ["focal_eiou", "cdiou"])
def test_hyper_parameters_match_naive(name):
    g = torch.Generator().manual_seed(3)
    P, T = rand_boxes(16, g), rand_boxes(16, g)
    kw = {"gamma": 1.5} if name == "focal_eiou" else {"lambda_": 0.3}
    got = loss_fn(name)(P, T, **kw)
    assert got.item() == pytest.approx(naive_loss(name, P, T, "mean", **kw), abs=1e-10)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
@pytest.mark.parametrize("name", LOSSES)
def test_formats_agree_with_xyxy(name, fmt):
    g = torch.Generator().manual_seed(4)
    P, T = rand_boxes(16, g), rand_boxes(16, g)
    a = loss_fn(name)(P, T, reduction="none")
    b = loss_fn(name)(box_convert(P, "xyxy", fmt), box_convert(T, "xyxy", fmt), box_format=fmt, reduction="none")
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_box_convert_round_trip_and_known_values():
    b = torch.tensor([[1.0, 2.0, 5.0, 8.0]])
    torch.testing.assert_close(box_convert(b, "xyxy", "xywh"), torch.tensor([[1.0, 2.0, 4.0, 6.0]]))
    torch.testing.assert_close(box_convert(b, "xyxy", "cxcywh"), torch.tensor([[3.0, 5.0, 4.0, 6.0]]))
    for fmt in ("xywh", "cxcywh"):
        torch.testing.assert_close(box_convert(box_convert(b, "xyxy", fmt), fmt, "xyxy"), b)
    with pytest.raises(ValueError, match="out_fmt"):
        box_convert(b, "xyxy", "yolo")


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", ["iou", "giou", "diou", "eiou", "cdiou"])
def test_gradcheck(name):
    # (ciou and focal_eiou detach a factor on purpose: see the alpha-frozen / focal-weight tests)
    g = torch.Generator().manual_seed(5)
    P = rand_boxes(6, g).requires_grad_(True)
    T = rand_boxes(6, g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(name)(a, b, reduction="none"), (P, T))


@pytest.mark.parametrize("kind", FUSED)
def test_fused_backward_equals_autograd_of_textbook(kind):
    """The hand-derived backward equals autograd of the formula written term by term (float64)."""
    g = torch.Generator().manual_seed(6)
    P, T = rand_boxes(300, g), rand_boxes(300, g)
    T[:20] = P[:20]  # ties everywhere: min/max split the gradient
    T[20:40, 0] = P[20:40, 0]  # partial ties
    up = torch.rand(300, generator=g, dtype=torch.float64)

    def textbook(a, b):
        x1, y1, x2, y2 = a.unbind(-1)
        X1, Y1, X2, Y2 = b.unbind(-1)
        inter = (torch.min(x2, X2) - torch.max(x1, X1)).clamp(min=0) * (torch.min(y2, Y2) - torch.max(y1, Y1)).clamp(min=0)
        union = (x2 - x1) * (y2 - y1) + (X2 - X1) * (Y2 - Y1) - inter + EPS
        iou = inter / union
        cw = torch.max(x2, X2) - torch.min(x1, X1)
        ch = torch.max(y2, Y2) - torch.min(y1, Y1)
        if kind == "giou":
            c = cw * ch + EPS
            return 1 - iou + (c - union) / c
        loss = 1 - iou + (((x1 + x2 - X1 - X2) / 2) ** 2 + ((y1 + y2 - Y1 - Y2) / 2) ** 2) / (cw ** 2 + ch ** 2 + EPS)
        if kind == "ciou":
            v = 4 / math.pi ** 2 * (torch.atan((X2 - X1) / (Y2 - Y1)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
            with torch.no_grad():
                alpha = v / (1 - iou + v + EPS)
            loss = loss + alpha * v
        return loss

    a1, b1 = P.clone().requires_grad_(True), T.clone().requires_grad_(True)
    a2, b2 = P.clone().requires_grad_(True), T.clone().requires_grad_(True)
    l1 = fused_box_loss(a1, b1, EPS, kind)
    l2 = textbook(a2, b2)
    torch.testing.assert_close(l1, l2, atol=1e-12, rtol=1e-12)
    g1 = torch.autograd.grad((l1 * up).sum(), (a1, b1))
    g2 = torch.autograd.grad((l2 * up).sum(), (a2, b2))
    torch.testing.assert_close(g1[0], g2[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(g1[1], g2[1], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", ["giou", "diou"])
def test_fused_gradcheck(kind):
    g = torch.Generator().manual_seed(7)
    P = rand_boxes(5, g).requires_grad_(True)
    T = rand_boxes(5, g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fused_box_loss(a, b, EPS, kind), (P, T))


def test_ciou_gradcheck_with_alpha_frozen():
    """CIoU's gradient is that of 1 - IoU + rho^2/c^2 + alpha0 v with alpha0 frozen at the point."""
    g = torch.Generator().manual_seed(8)
    P, T = rand_boxes(5, g), rand_boxes(5, g)
    iou = 1 - F.iou_loss(P, T, reduction="none")
    v = 4 / math.pi ** 2 * (torch.atan2(T[:, 2] - T[:, 0], T[:, 3] - T[:, 1])
                           - torch.atan2(P[:, 2] - P[:, 0], P[:, 3] - P[:, 1])) ** 2
    alpha0 = v / (1 - iou + v + EPS)

    def frozen(a):
        w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        vv = 4 / math.pi ** 2 * (torch.atan2(T[:, 2] - T[:, 0], T[:, 3] - T[:, 1]) - torch.atan2(w, h)) ** 2
        return F.diou_loss(a, T, reduction="none") + alpha0 * vv

    a = P.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(frozen, (a,))
    b = P.clone().requires_grad_(True)
    g1 = torch.autograd.grad(F.ciou_loss(a, T, reduction="sum"), a)[0]
    g2 = torch.autograd.grad(frozen(b).sum(), b)[0]
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-8)


# ------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("name", LOSSES)
def test_identical_and_zero_area_boxes_finite_with_finite_grads(name):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0],
                          [3.0, 3.0, 5.0, 3.0]], dtype=torch.float64)
    a = boxes.clone().requires_grad_(True)
    b = boxes.clone().requires_grad_(True)
    loss = loss_fn(name)(a, b, reduction="none")
    assert torch.isfinite(loss).all()
    ga, gb = torch.autograd.grad(loss.sum(), (a, b))
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
    # zero-area against a real box
    c = torch.tensor([[2.0, 2.0, 2.0, 2.0]], dtype=torch.float64, requires_grad=True)
    out = loss_fn(name)(c, boxes[:1])
    assert torch.isfinite(out)
    assert torch.isfinite(torch.autograd.grad(out, c)[0]).all()


@pytest.mark.parametrize("name", LOSSES)
def test_empty_input_gives_zero_with_grad(name):
    a = torch.zeros(0, 4, requires_grad=True)
    loss = loss_fn(name)(a, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad.shape == (0, 4)
    assert loss_fn(name)(a, torch.zeros(0, 4), reduction="none").shape == (0,)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(name, dtype):
    g = torch.Generator().manual_seed(9)
    P, T = rand_boxes(32, g, dtype=torch.float32), rand_boxes(32, g, dtype=torch.float32)
    Ph, Th = P.to(dtype).requires_grad_(True), T.to(dtype)
    out = loss_fn(name)(Ph, Th)
    assert out.dtype == torch.float32
    ref = loss_fn(name)(Ph.detach().float(), Th.float())
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    out.backward()
    assert Ph.grad.dtype == dtype and torch.isfinite(Ph.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(name)(P, T)
    assert auto.dtype == torch.float32 and torch.isfinite(auto)


def test_batched_leading_dims_and_weight():
    g = torch.Generator().manual_seed(10)
    P, T = rand_boxes(12, g).reshape(3, 4, 4), rand_boxes(12, g).reshape(3, 4, 4)
    for name in LOSSES:
        none = loss_fn(name)(P, T, reduction="none")
        assert none.shape == (3, 4)
    w = torch.rand(3, 4, generator=g, dtype=torch.float64)
    for name in ["giou", "eiou"]:
        none = loss_fn(name)(P, T, reduction="none")
        assert loss_fn(name)(P, T, sample_weight=w).item() == pytest.approx((none * w).mean().item(), rel=1e-12)
        assert loss_fn(name)(P, T, sample_weight=w, reduction="sum").item() == pytest.approx((none * w).sum().item(), rel=1e-12)


def test_focal_eiou_weighted_mean_is_normalised_by_weights():
    g = torch.Generator().manual_seed(11)
    P, T = rand_boxes(10, g), rand_boxes(10, g)
    w = torch.rand(10, generator=g, dtype=torch.float64)
    e = F.eiou_loss(P, T, reduction="none")
    f = (1 - F.iou_loss(P, T, reduction="none")).sqrt()
    assert F.focal_eiou_loss(P, T, sample_weight=w).item() == pytest.approx(((w * f * e).sum() / (w * f).sum()).item())
    # the focal weight carries no gradient: gradient = sum f_i dE_i / sum f_i
    a = P.clone().requires_grad_(True)
    b = P.clone().requires_grad_(True)
    g1 = torch.autograd.grad(F.focal_eiou_loss(a, T), a)[0]
    g2 = torch.autograd.grad((f * F.eiou_loss(b, T, reduction="none")).sum() / f.sum(), b)[0]
    torch.testing.assert_close(g1, g2)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("name", LOSSES)
def test_bad_inputs_raise(name):
    fn = loss_fn(name)
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    bad = good.clone()
    bad[1, 2] = 0.5  # x2 < x1 at index 1
    with pytest.raises(ValueError, match="inverted box.*index 1"):
        fn(bad, good)
    with pytest.raises(ValueError, match="target has an inverted box.*index 1"):
        fn(good, bad)
    out = fn(bad, good, validate=False)  # explicitly allowed
    assert out.shape == ()
    nan = good.clone()
    nan[2, 0] = float("nan")
    with pytest.raises(ValueError, match="input must hold finite.*index 2"):
        fn(nan, good)
    inf = good.clone()
    inf[0, 3] = float("inf")
    with pytest.raises(ValueError, match="target must hold finite.*index 0"):
        fn(good, inf)
    with pytest.raises(ValueError, match="input must have last dimension 4"):
        fn(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"target must have the same shape as input \(3, 4\)"):
        fn(good, good[:2])
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        fn(good.long(), good)
    with pytest.raises(ValueError, match="box_format must be one of"):
        fn(good, good, box_format="yolo")
    with pytest.raises(ValueError, match="reduction must be one of"):
        fn(good, good, reduction="avg")
    with pytest.raises(ValueError, match="eps must be > 0"):
        fn(good, good, eps=0.0)


def test_inverted_index_in_batched_and_converted_formats():
    good = torch.tensor([[5.0, 5.0, 2.0, 2.0]] * 6).reshape(2, 3, 4)  # cxcywh, all valid
    bad = good.clone()
    bad[1, 2, 3] = -1.0  # negative height
    with pytest.raises(ValueError, match=r"index \(1, 2\)"):
        F.giou_loss(bad, good, box_format="cxcywh")
    with pytest.raises(ValueError, match=r"index \(1, 2\)"):
        F.eiou_loss(bad, good, box_format="cxcywh")
    with pytest.raises(ValueError, match="boxes1 must be a 2-D"):
        tailwise.box_iou(good, good[0])
    with pytest.raises(ValueError, match="boxes2 has an inverted box"):
        tailwise.box_iou(good[0], bad[1], box_format="cxcywh")


def test_modules_registry_and_repr():
    g = torch.Generator().manual_seed(12)
    P, T = rand_boxes(8, g), rand_boxes(8, g)
    classes = {"iou": tailwise.IoULoss, "giou": tailwise.GIoULoss, "diou": tailwise.DIoULoss,
               "ciou": tailwise.CIoULoss, "eiou": tailwise.EIoULoss, "focal_eiou": tailwise.FocalEIoULoss,
               "cdiou": tailwise.CDIoULoss}
    for name, cls in classes.items():
        mod = tailwise.build_loss(name, reduction="sum")
        assert type(mod) is cls
        assert mod(P, T).item() == pytest.approx(loss_fn(name)(P, T, reduction="sum").item())
        assert "box_format='xyxy'" in repr(mod)
        assert mod.state_dict() == {}
    assert tailwise.IoULoss(mode="log")(P, T).item() == pytest.approx(F.iou_loss(P, T, mode="log").item())
    assert tailwise.FocalEIoULoss(gamma=1.0)(P, T).item() == pytest.approx(F.focal_eiou_loss(P, T, gamma=1.0).item())
    assert tailwise.CDIoULoss(lambda_=0.5)(P, T).item() == pytest.approx(F.cdiou_loss(P, T, lambda_=0.5).item())
    with pytest.raises(ValueError, match="mode must be one of"):
        tailwise.IoULoss(mode="square")
    with pytest.raises(ValueError, match="box_format must be one of"):
        tailwise.GIoULoss(box_format="ltrb")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        tailwise.FocalEIoULoss(gamma=-1)


def test_backend_switch():
    from tailwise.boxes import get_box_backend, set_box_backend

    before = get_box_backend()
    try:
        set_box_backend("eager")
        assert get_box_backend()["backend"] == "eager"
        with pytest.raises(ValueError, match="backend must be one of"):
            set_box_backend("triton")
        with pytest.raises(ValueError, match="compile_min_boxes"):
            set_box_backend("auto", compile_min_boxes=-1)
    finally:
        set_box_backend(before["backend"], before["compile_min_boxes"])


# ------------------------------------------------------------------ hypothesis properties
coord = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
size = st.floats(0.01, 30, allow_nan=False, allow_infinity=False)


@st.composite
def box(draw):
    x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
    return [x, y, x + w, y + h]


@given(p=box(), t=box(), name=st.sampled_from(LOSSES))
def test_property_naive_agreement(p, t, name):
    P = torch.tensor([p], dtype=torch.float64)
    T = torch.tensor([t], dtype=torch.float64)
    got = loss_fn(name)(P, T).item()
    assert got == pytest.approx(naive_loss(name, P, T), abs=1e-9, rel=1e-9)


@given(p=box(), name=st.sampled_from(LOSSES))
def test_property_zero_for_identical(p, name):
    P = torch.tensor([p], dtype=torch.float64)
    area = (p[2] - p[0]) * (p[3] - p[1])
    # 1 - A/(A + eps) is the only residue
    assert loss_fn(name)(P, P.clone()).item() == pytest.approx(0.0, abs=2 * EPS / area + 1e-12)


@given(p=box(), t=box(), dx=coord, dy=coord, s=st.floats(0.1, 10), name=st.sampled_from(LOSSES))
def test_property_translation_and_scale_invariance(p, t, dx, dy, s, name):
    P = torch.tensor([p], dtype=torch.float64)
    T = torch.tensor([t], dtype=torch.float64)
    shift = torch.tensor([dx, dy, dx, dy], dtype=torch.float64)
    base = loss_fn(name)(P, T, eps=1e-15).item()
    assert loss_fn(name)(P + shift, T + shift, eps=1e-15).item() == pytest.approx(base, abs=1e-7)
    assert loss_fn(name)(P * s, T * s, eps=1e-15).item() == pytest.approx(base, abs=1e-7)


@given(p=box(), t=box(), name=st.sampled_from(["iou", "giou", "diou", "eiou", "cdiou"]))
def test_property_symmetric_losses(p, t, name):
    P = torch.tensor([p], dtype=torch.float64)
    T = torch.tensor([t], dtype=torch.float64)
    assert loss_fn(name)(P, T).item() == pytest.approx(loss_fn(name)(T, P).item(), abs=1e-12)


@given(p=box(), t=box())
def test_property_giou_range_and_ordering(p, t):
    P = torch.tensor([p], dtype=torch.float64)
    T = torch.tensor([t], dtype=torch.float64)
    g = F.giou_loss(P, T).item()
    assert 0.0 <= g <= 2.0
    assert g >= F.iou_loss(P, T).item() - 1e-12  # the enclosing penalty is non-negative
    assert F.ciou_loss(P, T).item() >= F.diou_loss(P, T).item() - 1e-12
    assert F.eiou_loss(P, T).item() >= F.diou_loss(P, T).item() - 1e-12
    m = tailwise.generalized_box_iou(P, T)
    assert -1.0 <= m.item() <= 1.0 and 1 - m.item() == pytest.approx(g, abs=1e-12)
