"""3-D boxes: pairwise IoU/GIoU and aligned losses vs a naive per-pair loop, reduction to 2-D,
integer inputs, degenerate boxes, errors."""

import itertools

import pytest
import torch

import tailwise
import tailwise.functional as TF


def naive_iou_giou(a, b):
    vol = lambda x: max(x[3] - x[0], 0) * max(x[4] - x[1], 0) * max(x[5] - x[2], 0)
    inter = 1.0
    hull = 1.0
    for d in range(3):
        inter *= max(min(a[d + 3], b[d + 3]) - max(a[d], b[d]), 0.0)
        hull *= max(a[d + 3], b[d + 3]) - min(a[d], b[d])
    union = vol(a) + vol(b) - inter
    iou = inter / union
    return iou, iou - (hull - union) / hull


def _boxes(n, g):
    lo = torch.rand(n, 3, generator=g, dtype=torch.float64) * 10
    return torch.cat([lo, lo + torch.rand(n, 3, generator=g, dtype=torch.float64) * 5 + 0.5], 1)


def test_pairwise_matches_naive():
    g = torch.Generator().manual_seed(0)
    a, b = _boxes(5, g), _boxes(4, g)
    iou = tailwise.box_iou_3d(a, b, eps=1e-12)
    giou = tailwise.generalized_box_iou_3d(a, b, eps=1e-12)
    for i, j in itertools.product(range(5), range(4)):
        ri, rg = naive_iou_giou(a[i].tolist(), b[j].tolist())
        assert iou[i, j].item() == pytest.approx(ri, rel=1e-9, abs=1e-12)
        assert giou[i, j].item() == pytest.approx(rg, rel=1e-9, abs=1e-12)


def test_reduces_to_2d_with_shared_depth():
    g = torch.Generator().manual_seed(1)
    a2, b2 = (torch.rand(6, 2, generator=g) * 5 for _ in range(2))
    a = torch.cat([a2, a2 + 2], 1)
    b = torch.cat([b2, b2 + 3], 1)
    to3 = lambda x: torch.stack([x[:, 0], x[:, 1], torch.zeros(6), x[:, 2], x[:, 3], torch.full((6,), 4.0)], 1)
    torch.testing.assert_close(TF.iou_3d_loss(to3(a), to3(b), reduction="none"), TF.iou_loss(a, b, reduction="none"))
    torch.testing.assert_close(TF.giou_3d_loss(to3(a), to3(b), reduction="none"),
                               TF.giou_loss(a, b, reduction="none"), rtol=1e-5, atol=1e-6)


def test_losses_gradcheck_module_and_aligned_equals_diagonal():
    g = torch.Generator().manual_seed(2)
    a, b = _boxes(4, g).requires_grad_(True), _boxes(4, g)
    assert torch.autograd.gradcheck(lambda x: TF.giou_3d_loss(x, b), (a,))
    assert torch.autograd.gradcheck(lambda x: TF.iou_3d_loss(x, b), (a,))
    torch.testing.assert_close(TF.giou_3d_loss(a, b, reduction="none"),
                               1 - tailwise.generalized_box_iou_3d(a, b).diagonal())
    crit = tailwise.build_loss("giou_3d", reduction="sum")
    torch.testing.assert_close(crit(a, b), TF.giou_3d_loss(a, b, reduction="sum"))


def test_integer_boxes_degenerate_and_errors():
    ia = torch.tensor([[0, 0, 0, 2, 2, 2]])
    ib = torch.tensor([[1, 0, 0, 3, 2, 2]])
    assert tailwise.box_iou_3d(ia, ib).dtype == torch.float32
    assert tailwise.box_iou_3d(ia, ib).item() == pytest.approx(1 / 3)
    pt = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    loss = TF.giou_3d_loss(pt, pt.detach())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pt.grad).all()
    e = torch.zeros(0, 6, requires_grad=True)
    out = TF.iou_3d_loss(e, torch.zeros(0, 6))
    assert out.item() == 0.0 and out.grad_fn is not None
    with pytest.raises(ValueError, match="inverted box"):
        TF.iou_3d_loss(torch.tensor([[2.0, 0, 0, 1, 1, 1]]), torch.ones(1, 6))
    with pytest.raises(ValueError, match="last dimension 6"):
        tailwise.box_iou_3d(torch.ones(2, 4), torch.ones(2, 6))
    with pytest.raises(TypeError, match="boxes1"):
        tailwise.box_iou_3d(torch.ones(2, 6, dtype=torch.bool), torch.ones(2, 6))
