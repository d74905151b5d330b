"""Pairwise box matrices: ``complete_box_iou`` and integer boxes, against torchvision's own test
values (test/test_ops.py: TestBoxIou, TestGeneralizedBoxIou, TestDistanceBoxIoU,
TestCompleteBoxIou), a naive float64 reference, the aligned losses, gradients and bad inputs."""

import math

import pytest
import torch

import tailwise
import tailwise.functional as TF

# torchvision's test boxes and expected matrices (numbers transcribed from its test_ops.py)
INT_BOXES = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]]
INT_BOXES2 = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300]]
FLOAT_BOXES = [
    [285.3538, 185.5758, 1193.5110, 851.4551],
    [285.1472, 188.7374, 1192.4984, 851.0669],
    [279.2440, 197.9812, 1189.4746, 849.2019],
]
FLOAT_EXPECTED = [[1.0, 0.9933, 0.9673], [0.9933, 1.0, 0.9737], [0.9673, 0.9737, 1.0]]
INT_EXPECTED = {
    "box_iou": [[1.0, 0.25, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0625, 0.25, 0.0]],
    "generalized_box_iou": [[1.0, 0.25, -0.7778], [0.25, 1.0, -0.8611], [-0.7778, -0.8611, 1.0],
                            [0.0625, 0.25, -0.8819]],
    "distance_box_iou": [[1.0, 0.1875, -0.4444], [0.1875, 1.0, -0.5625], [-0.4444, -0.5625, 1.0],
                         [-0.0781, 0.1875, -0.6267]],
    "complete_box_iou": [[1.0, 0.1875, -0.4444], [0.1875, 1.0, -0.5625], [-0.4444, -0.5625, 1.0],
                         [-0.0781, 0.1875, -0.6267]],
}
FUNCS = list(INT_EXPECTED)
EPS = 1e-7


def _fn(name):
    return getattr(tailwise, name)


def naive_ciou(p, t, eps=EPS):
    """Plain-Python float64 CIoU of one xyxy pair, from the paper's formula (eps as tailwise)."""
    x1, y1, x2, y2 = p
    X1, Y1, X2, Y2 = t
    w, h, W, H = x2 - x1, y2 - y1, X2 - X1, Y2 - Y1
    inter = max(0.0, min(x2, X2) - max(x1, X1)) * max(0.0, min(y2, Y2) - max(y1, Y1))
    iou = inter / (w * h + W * H - inter + eps)
    c2 = (max(x2, X2) - min(x1, X1)) ** 2 + (max(y2, Y2) - min(y1, Y1)) ** 2 + eps
    rho2 = ((x1 + x2 - X1 - X2) / 2) ** 2 + ((y1 + y2 - Y1 - Y2) / 2) ** 2
    v = 4 / math.pi ** 2 * (math.atan2(W, H) - math.atan2(w, h)) ** 2
    return iou - rho2 / c2 - v / (1 - iou + v + eps) * v


def rand_boxes(n, g, dtype=torch.float64):
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 5 + 0.1
    return torch.cat([xy, xy + wh], dim=1)


# ------------------------------------------------------------------ torchvision's values
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_torchvision_int_values(name, dtype):
    out = _fn(name)(torch.tensor(INT_BOXES, dtype=dtype), torch.tensor(INT_BOXES2, dtype=dtype))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(INT_EXPECTED[name]), rtol=0.0, atol=1e-4)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_narrow_integer_dtypes(name, dtype):
    # torchvision's 3 x 3 block, scaled by 1/2 (uint8 holds 150) or 1/4 rounded (int8): every
    # function is scale invariant, and the int8 case must equal the same boxes given as floats
    if dtype == torch.uint8:
        boxes = (torch.tensor(INT_BOXES2) // 2).to(torch.uint8)
        torch.testing.assert_close(_fn(name)(boxes, boxes), torch.tensor(INT_EXPECTED[name][:3]), rtol=0.0, atol=1e-4)
    else:
        boxes = torch.tensor([[0, 0, 25, 25], [0, 0, 12, 13], [50, 50, 75, 75], [0, 0, 6, 6]], dtype=torch.int8)
        torch.testing.assert_close(_fn(name)(boxes, boxes[:3]), _fn(name)(boxes.float(), boxes[:3].float()))


@pytest.mark.parametrize("name", FUNCS)
def test_uint8_disjoint_boxes_do_not_wrap_around(name):
    # corner differences of disjoint uint8 boxes are negative: computed in float, never modulo 256
    a = torch.tensor([[0, 0, 10, 10]], dtype=torch.uint8)
    b = torch.tensor([[200, 200, 250, 250]], dtype=torch.uint8)
    torch.testing.assert_close(_fn(name)(a, b), _fn(name)(a.float(), b.float()))
    assert _fn("box_iou")(a, b).item() == 0.0


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 0.002), (torch.float32, 1e-3), (torch.float64, 1e-3)])
def test_torchvision_float_values_complete_box_iou(dtype, atol):
    b = torch.tensor(FLOAT_BOXES, dtype=dtype)
    out = tailwise.complete_box_iou(b, b)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out, torch.tensor(FLOAT_EXPECTED, dtype=out.dtype), rtol=0.0, atol=atol)


# ------------------------------------------------------------------ complete_box_iou values
def test_complete_box_iou_hand_value():
    a = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    v = 4 / math.pi ** 2 * (math.pi / 4 - math.atan(2)) ** 2
    out = tailwise.complete_box_iou(a, b)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(0.5 - 0.25 / 5 - v * v / (0.5 + v), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(1.0, abs=1e-6)  # identical boxes: alpha v = 0, not 0/0


def test_complete_box_iou_matches_naive_and_aligned_ciou_loss():
    g = torch.Generator().manual_seed(0)
    P, T = rand_boxes(7, g), rand_boxes(5, g)
    T[0] = P[0]  # an identical pair
    out = tailwise.complete_box_iou(P, T)
    want = torch.tensor([[naive_ciou(p, t) for t in T.tolist()] for p in P.tolist()], dtype=torch.float64)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    # torchvision's cartesian check: the matrix is the aligned loss of every pair
    pi, tj = torch.meshgrid(torch.arange(7), torch.arange(5), indexing="ij")
    aligned = 1 - TF.ciou_loss(P[pi.flatten()], T[tj.flatten()], reduction="none")
    torch.testing.assert_close(out, aligned.reshape(7, 5), rtol=1e-12, atol=1e-12)
    # ciou <= diou <= iou, symmetric in its arguments
    assert (out <= tailwise.distance_box_iou(P, T) + 1e-12).all()
    torch.testing.assert_close(tailwise.complete_box_iou(T, P), out.T)


def test_formats_and_scale_invariance():
    g = torch.Generator().manual_seed(1)
    P, T = rand_boxes(4, g), rand_boxes(3, g)
    ref = tailwise.complete_box_iou(P, T)
    xywh = lambda b: torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1)  # noqa: E731
    cxcywh = lambda b: torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)  # noqa: E731
    torch.testing.assert_close(tailwise.complete_box_iou(xywh(P), xywh(T), box_format="xywh"), ref)
    torch.testing.assert_close(tailwise.complete_box_iou(cxcywh(P), cxcywh(T), box_format="cxcywh"), ref)
    torch.testing.assert_close(tailwise.complete_box_iou(P * 7 + 3, T * 7 + 3), ref, rtol=1e-9, atol=1e-9)
    # integer boxes in another format too
    bi = torch.tensor([[0, 0, 100, 100], [10, 20, 30, 40]])
    torch.testing.assert_close(tailwise.complete_box_iou(bi, bi, box_format="xywh"),
                               tailwise.complete_box_iou(bi.float(), bi.float(), box_format="xywh"))


def test_degenerate_and_empty():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0]],
                         requires_grad=True)
    out = tailwise.complete_box_iou(boxes, boxes)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(boxes.grad).all()
    assert tailwise.complete_box_iou(boxes[:0], boxes).shape == (0, 4)
    assert tailwise.complete_box_iou(boxes, boxes[:0]).shape == (4, 0)
    big = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    assert torch.isfinite(tailwise.complete_box_iou(big, torch.tensor([[1e6, 1e6, 1e6 + 1, 1e6 + 3]]))).all()


def test_half_precision_and_autocast_compute_in_float32():
    g = torch.Generator().manual_seed(2)
    P, T = rand_boxes(3, g, torch.float32), rand_boxes(4, g, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tailwise.complete_box_iou(P.bfloat16(), T)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, tailwise.complete_box_iou(P, T), rtol=0, atol=0.05)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", ["box_iou", "generalized_box_iou", "distance_box_iou"])
def test_pairwise_gradcheck(name):
    g = torch.Generator().manual_seed(3)
    P = rand_boxes(3, g).requires_grad_(True)
    T = rand_boxes(4, g).requires_grad_(True)
    assert torch.autograd.gradcheck(_fn(name), (P, T))


def test_complete_box_iou_gradcheck_with_alpha_frozen():
    """The gradient is that of IoU - rho^2/c^2 - alpha0 v with alpha0 frozen at the point
    (torchvision computes alpha under no_grad, as the official code)."""
    g = torch.Generator().manual_seed(4)
    P, T = rand_boxes(3, g), rand_boxes(4, g)
    iou = tailwise.box_iou(P, T)

    def v_of(a, b):
        return 4 / math.pi ** 2 * (torch.atan2(b[None, :, 2] - b[None, :, 0], b[None, :, 3] - b[None, :, 1])
                                   - torch.atan2(a[:, None, 2] - a[:, None, 0], a[:, None, 3] - a[:, None, 1])) ** 2

    v0 = v_of(P, T)
    alpha0 = v0 / (1 - iou + v0 + EPS)

    def frozen(a, b):
        return tailwise.distance_box_iou(a, b) - alpha0 * v_of(a, b)

    a, b = P.clone().requires_grad_(True), T.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(frozen, (a, b))
    torch.testing.assert_close(tailwise.complete_box_iou(P, T), frozen(P, T), rtol=1e-12, atol=1e-12)
    up = torch.rand(3, 4, generator=g, dtype=torch.float64)
    g1 = torch.autograd.grad((tailwise.complete_box_iou(a, b) * up).sum(), (a, b))
    g2 = torch.autograd.grad((frozen(a, b) * up).sum(), (a, b))
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_compile_fullgraph_traces():
    torch._dynamo.reset()
    fn = torch.compile(tailwise.complete_box_iou, fullgraph=True, backend="eager")
    g = torch.Generator().manual_seed(5)
    P, T = rand_boxes(3, g, torch.float32), rand_boxes(2, g, torch.float32)
    torch.testing.assert_close(fn(P, T), tailwise.complete_box_iou(P, T))


# ------------------------------------------------------------------ dtypes and bad inputs
def test_mixed_dtypes_and_exports():
    bi = torch.tensor(INT_BOXES2)
    out = tailwise.complete_box_iou(bi, bi.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), torch.tensor(INT_EXPECTED["complete_box_iou"][:3]), rtol=0, atol=1e-4)
    assert tailwise.box_iou(bi, bi.float()).dtype == torch.float32
    assert TF.complete_box_iou is tailwise.complete_box_iou is tailwise.boxes.complete_box_iou
    assert "complete_box_iou" in tailwise.boxes.functional.__all__
    assert "complete_box_iou" in tailwise.boxes.__all__ and "complete_box_iou" in tailwise.__all__


@pytest.mark.parametrize("name", FUNCS)
def test_bad_inputs_name_the_argument(name):
    fn = _fn(name)
    good = torch.tensor([[0, 0, 2, 2]])
    with pytest.raises(ValueError, match="boxes1 has an inverted box"):
        fn(torch.tensor([[5, 5, 2, 2]]), good)
    with pytest.raises(ValueError, match="boxes2 has an inverted box"):
        fn(good, torch.tensor([[0, 5, 2, 2]], dtype=torch.uint8))
    with pytest.raises(TypeError, match="boxes1 must be a floating-point or integer tensor"):
        fn(good.bool(), good)
    with pytest.raises(ValueError, match="boxes2 must be a 2-D"):
        fn(good, good[0])
    with pytest.raises(ValueError, match="box_format"):
        fn(good, good, box_format="yolo")
    with pytest.raises(ValueError, match="eps"):
        fn(good, good, eps=0.0)
    # validate=False skips the inverted-box check for integer boxes too
    assert torch.isfinite(fn(torch.tensor([[5, 5, 2, 2]]), good, validate=False)).all()


@pytest.mark.parametrize("name", FUNCS)
def test_no_host_to_device_copies_for_integer_boxes(name):
    """Off the CPU (``meta`` standing in for CUDA, as in the contract suite) the float conversion
    of integer boxes and the value checks stay on the device."""
    from test_contract import _refuse_host_to_device

    a = torch.tensor(INT_BOXES, device="meta")
    b = torch.tensor(INT_BOXES2, device="meta", dtype=torch.int32)
    with _refuse_host_to_device():
        out = _fn(name)(a, b)
    assert out.shape == (4, 3) and out.dtype == torch.float32
