"""`tailwise bench boxes --gradient paper`: the DIoU authors' hand-written gradients.

Checked three ways: against a scalar, branch-by-branch re-statement of the script's rules (an
independent naive implementation), against autograd where the script is exact up to its doubled
width/height map, and on a hand-computed case showing the flipped enclosing-diagonal term.
"""

import math

import pytest
import torch

from tailwise import functional as TF
from tailwise.bench._paper_gradient import paper_direction, paper_iou
from tailwise.bench.boxes import make_cases, simulate
from tailwise.cli import main


def _naive(name, box, gt):
    """One case, written as the script's if/else rules with Python floats."""
    x, y, w, h = box
    xg, yg, wg, hg = gt
    t, b, l, r = y - h / 2, y + h / 2, x - w / 2, x + w / 2
    tg, bg, lg, rg = yg - hg / 2, yg + hg / 2, xg - wg / 2, xg + wg / 2
    It, Ib, Il, Ir = max(t, tg), min(b, bg), max(l, lg), min(r, rg)
    I = (Ib - It) * (Ir - Il)
    U = (b - t) * (r - l) + (bg - tg) * (rg - lg) - I
    overlap = It < Ib and Il < Ir
    dI = {"t": -(Ir - Il) if t > tg else 0.0, "b": (Ir - Il) if b < bg else 0.0,
          "l": -(Ib - It) if l > lg else 0.0, "r": (Ib - It) if r < rg else 0.0}
    dX = {"t": -(r - l), "b": r - l, "l": -(b - t), "r": b - t}
    dU = {k: dX[k] - dI[k] for k in dI}
    iou_g = {k: (U * dI[k] - I * dU[k]) / U**2 if overlap and U > 0 else 0.0 for k in dI}
    Ct, Cb, Cl, Cr = min(t, tg), max(b, bg), min(l, lg), max(r, rg)

    def xywh(g):
        return [g["l"] + g["r"], g["t"] + g["b"], g["r"] - g["l"], g["b"] - g["t"]]

    if name == "iou":
        return xywh(iou_g)
    if name == "giou":
        C = (Cb - Ct) * (Cr - Cl)
        dC = {"t": -(Cr - Cl) if t < tg else 0.0, "b": (Cr - Cl) if b > bg else 0.0,
              "l": -(Cb - Ct) if l < lg else 0.0, "r": (Cb - Ct) if r > rg else 0.0}
        pen = {k: (C * dU[k] - U * dC[k]) / C**2 for k in dI}
        return xywh({k: iou_g[k] + pen[k] for k in dI} if overlap else pen)
    c2 = (Cb - Ct) ** 2 + (Cr - Cl) ** 2
    cw, ch = Cr - Cl, Cb - Ct
    rec = {"x": (1.0 if r > rg else 0.0) - (1.0 if l < lg else 0.0),
           "y": (1.0 if b > bg else 0.0) - (1.0 if t < tg else 0.0),
           "w": (0.5 if r > rg else 0.0) - (-0.5 if l < lg else 0.0),
           "h": (0.5 if b > bg else 0.0) - (-0.5 if t < tg else 0.0)}
    cw_rec, ch_rec = dict(rec), dict(rec)
    if l < lg and r > rg:
        cw_rec["w"] = -1.0
    if t < tg and b > bg:
        ch_rec["h"] = -1.0
    dc2 = {k: 2 * cw * cw_rec[k] + 2 * ch * ch_rec[k] for k in rec}
    rho2 = (x - xg) ** 2 + (y - yg) ** 2
    pen = [(2 * (xg - x) * c2 - dc2["x"] * rho2) / c2**2, (2 * (yg - y) * c2 - dc2["y"] * rho2) / c2**2,
           dc2["w"] * rho2 / c2**2, dc2["h"] * rho2 / c2**2]
    out = [a + p for a, p in zip(xywh(iou_g), pen)]
    if name == "ciou":
        d = math.atan(wg / hg) - math.atan(w / h)
        v = 4 / math.pi**2 * d**2
        alpha = v / (1 - (I / U if overlap else 0.0) + v + 1e-7)
        out[2] += alpha * 8 / math.pi**2 * d * h
        out[3] += -alpha * 8 / math.pi**2 * d * w
    return out


@pytest.mark.parametrize("name", ["iou", "giou", "diou", "ciou"])
def test_vectorised_direction_matches_the_scalar_rules(name):
    anchors, targets = make_cases(1, seed=3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    extra = torch.rand(40, 4, generator=gen, dtype=torch.float64) * torch.tensor([6.0, 6.0, 2.0, 2.0],
                                                                                 dtype=torch.float64)
    extra[:, :2] += 7.0
    extra[:, 2:] += 0.2
    pred = torch.cat([anchors, extra])
    gt = torch.cat([targets, targets[: len(extra)]])
    got = paper_direction(name, pred, gt)
    want = torch.tensor([_naive(name, p.tolist(), g.tolist()) for p, g in zip(pred, gt)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, loss", [("iou", TF.iou_loss), ("giou", TF.giou_loss)])
def test_iou_and_giou_are_the_exact_gradient_with_width_height_doubled(name, loss):
    pred = torch.tensor([[10.2, 10.1, 1.2, 0.9], [9.7, 10.3, 0.8, 1.6]], dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([[10.0, 10.0, 1.0, 1.0], [10.0, 10.0, 0.5, 2.0]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(loss(pred, gt, box_format="cxcywh", reduction="sum"), pred)
    ascent = -grad
    got = paper_direction(name, pred.detach(), gt)
    torch.testing.assert_close(got[:, :2], ascent[:, :2])
    torch.testing.assert_close(got[:, 2:], 2 * ascent[:, 2:])


def test_diou_flips_the_enclosing_diagonal_term_for_x():
    # pred right of the target, same row: only the enclosing box's right edge is the prediction's
    pred = torch.tensor([[10.5, 10.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([[10.0, 10.0, 1.0, 1.0]], dtype=torch.float64)
    iou_part = paper_direction("iou", pred.detach(), gt)[0, 0]
    paper_penalty = float(paper_direction("diou", pred.detach(), gt)[0, 0] - iou_part)
    (g_d,) = torch.autograd.grad(TF.diou_loss(pred, gt, box_format="cxcywh", reduction="sum"), pred)
    (g_i,) = torch.autograd.grad(TF.iou_loss(pred, gt, box_format="cxcywh", reduction="sum"), pred)
    exact_penalty = float(-(g_d - g_i)[0, 0])
    # c^2 = 1.5^2 + 1^2 = 3.25, rho^2 = 0.25, exact dc^2/dx = 2 * 1.5 = 3:
    # exact (-0.5 * 2 * 3.25 + 3 * 0.25) / 3.25^2; the script subtracts, with dc^2/dx = 2 * 1.5 + 2 * 1 (coupled)
    assert exact_penalty == pytest.approx((2 * -0.5 * 3.25 + 3.0 * 0.25) / 3.25**2)
    assert paper_penalty == pytest.approx((2 * -0.5 * 3.25 - 5.0 * 0.25) / 3.25**2)


def test_paper_iou_is_zero_without_overlap():
    pred = torch.tensor([[10.2, 10.0, 1.0, 1.0], [13.0, 10.0, 1.0, 1.0]], dtype=torch.float64)
    gt = torch.tensor([[10.0, 10.0, 1.0, 1.0]] * 2, dtype=torch.float64)
    torch.testing.assert_close(paper_iou(pred, gt), torch.tensor([0.8 / 1.2, 0.0], dtype=torch.float64))


def test_paper_simulation_runs_and_rejects_losses_the_script_lacks(tmp_path, capsys):
    anchors, targets = make_cases(1, seed=0)
    res = simulate("diou", anchors, targets, 20, gradient="paper")
    assert len(res["errors"]) == 20 and res["errors"][-1] < res["errors"][0]
    out = tmp_path / "o"
    assert main(["bench", "boxes", "--gradient", "paper", "--points", "1", "--epochs", "10", "--out", str(out),
                 "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert "hand-written MATLAB gradients" in report and "decayed to 0.01 after iteration 8" in report
    assert main(["bench", "boxes", "--gradient", "paper", "--losses", "eiou", "--out", str(out), "--quiet"]) == 2
    assert "has no gradient for eiou" in capsys.readouterr().err
