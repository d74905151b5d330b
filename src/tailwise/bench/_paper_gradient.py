r"""The DIoU authors' gradient convention for the box simulation (``--gradient paper``).

Re-derived from the MATLAB files of the official repository (github.com/Zzh-tju/DIoU,
``simulation experiment/``: ``test_1715k.m`` drives ``dIOU``, ``dGIOU``, ``dDIOU``, ``dCIOU``
with the helpers ``dIbox``, ``dUbox``, ``dXbox``, ``dCbox``, ``In``, ``cover``, ``iou``,
``to_tblr``, ``to_xywh``). Each function returns an *ascent* direction of the box quality
(IoU, GIoU, or minus the DIoU/CIoU penalty), and the script moves the box by
``pred += lr * (2 - IoU) * direction`` with no clamping. What the script does, term by term,
with ``t, b, l, r = y - h/2, y + h/2, x - w/2, x + w/2`` (``t < b``):

* **IoU** (``dIOU``): :math:`\partial\,\mathrm{IoU}/\partial\{t,b,l,r\} = (U\,\partial I - I\,\partial U)/U^2`
  with the exact one-sided derivatives of the intersection and of the box area, zero when the
  boxes do not overlap. It is mapped to ``(x, y, w, h)`` by ``to_xywh``: ``dx = dl + dr``,
  ``dy = dt + db`` (exact), but ``dw = dr - dl`` and ``dh = db - dt``, **twice** the exact
  chain rule (which has a factor 1/2), so width and height move twice as fast as the true
  gradient says. (A box whose ``t > b`` gets ``dt := db``, a box with ``l > r`` ``dl := dr``.)
* **GIoU** (``dGIOU``): the IoU term plus :math:`(C\,\partial U - U\,\partial C)/C^2` (``C`` the
  enclosing area): the exact gradient of ``GIoU = IoU - 1 + U/C``, in the same doubled
  ``to_xywh`` map. Without overlap the intersection inside ``U`` is *not* clipped at zero
  (``I = (min b - max t)(min r - max l)``, positive when the boxes are apart in both axes).
* **DIoU** (``dDIOU``): the IoU term (as above) plus, computed directly in ``(x, y, w, h)``,
  :math:`(2(x_g - x)\,c^2 - \partial c^2\,\rho^2)/c^4` for ``x`` (same for ``y``) and
  :math:`\partial c^2\,\rho^2/c^4` for ``w``, ``h``, where ``c^2 = C_w^2 + C_h^2`` is the squared
  enclosing diagonal and ``rho^2`` the squared centre distance. The exact ascent direction of
  :math:`-\rho^2/c^2` in ``x`` is :math:`(2(x_g - x)c^2 + \partial c^2\,\rho^2)/c^4`: the script
  **flips the sign of the enclosing-diagonal term for x and y** (its step shrinks the enclosing
  box, the true gradient grows it) and keeps it for ``w``, ``h``. Also,
  :math:`\partial c^2 = 2C_w\,\partial C_w + 2C_h\,\partial C_h` is computed with ``C_w`` and
  ``C_h`` sharing one derivative record (``dC_w/dy`` is taken as ``dC_h/dy`` and ``dC_h/dx`` as
  ``dC_w/dx``: **width and height terms coupled**), and when the predicted box spans the target
  horizontally (vertically) ``dC_w/dw`` (``dC_h/dh``) is set to ``-1`` instead of ``+1``.
* **CIoU** (``dCIOU``): DIoU's direction plus ``alpha * dv`` with
  :math:`v = \tfrac{4}{\pi^2}(\arctan\tfrac{w_g}{h_g} - \arctan\tfrac{w}{h})^2`,
  :math:`\alpha = v / (1 - \mathrm{IoU} + v + 10^{-7})`, and ``dv`` for ``w``/``h`` written as
  :math:`\tfrac{8}{\pi^2}(\arctan\tfrac{w_g}{h_g} - \arctan\tfrac{w}{h})\cdot(h, -w)`, i.e.
  without the :math:`1/(w^2 + h^2)` factor of the true derivative (as the paper's eq. 12 notes).

The IoU used for the ``(2 - IoU)`` factor is the script's ``iou``: ``I/U`` when the boxes
overlap, else 0. Everything runs vectorised in float64 (MATLAB doubles).
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

__all__ = ["PAPER_LOSSES", "paper_direction", "paper_iou"]

PAPER_LOSSES = ("iou", "giou", "diou", "ciou")


def _tblr(box: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y, w, h = box.unbind(-1)
    return y - h / 2, y + h / 2, x - w / 2, x + w / 2


def _terms(pred: Tensor, gt: Tensor) -> Dict[str, Tensor]:
    t, b, l, r = _tblr(pred)
    tg, bg, lg, rg = _tblr(gt)
    it, ib, il, ir = torch.maximum(t, tg), torch.minimum(b, bg), torch.maximum(l, lg), torch.minimum(r, rg)
    inter = (ib - it) * (ir - il)  # not clipped: the script's I
    union = (b - t) * (r - l) + (bg - tg) * (rg - lg) - inter
    zero = torch.zeros_like(t)
    d_inter = {"t": torch.where(t > tg, -(ir - il), zero), "b": torch.where(b < bg, ir - il, zero),
               "l": torch.where(l > lg, -(ib - it), zero), "r": torch.where(r < rg, ib - it, zero)}
    d_area = {"t": -(r - l), "b": r - l, "l": -(b - t), "r": b - t}
    d_union = {k: d_area[k] - d_inter[k] for k in "tblr"}
    ct, cb, cl, cr = torch.minimum(t, tg), torch.maximum(b, bg), torch.minimum(l, lg), torch.maximum(r, rg)
    return {"t": t, "b": b, "l": l, "r": r, "tg": tg, "bg": bg, "lg": lg, "rg": rg,
            "I": inter, "U": union, "dI": d_inter, "dU": d_union,
            "overlap": (it < ib) & (il < ir), "ct": ct, "cb": cb, "cl": cl, "cr": cr}


def paper_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """The script's IoU: ``I / U`` where the boxes overlap, else 0 (``iou.m``)."""
    s = _terms(pred, gt)
    return torch.where(s["overlap"], s["I"] / s["U"], torch.zeros_like(s["I"]))


def _iou_tblr(s: Dict[str, Tensor]) -> Dict[str, Tensor]:
    ok = s["overlap"] & (s["U"] > 0)
    U, I = s["U"], s["I"]
    g = {k: torch.where(ok, (U * s["dI"][k] - I * s["dU"][k]) / U**2, torch.zeros_like(U)) for k in "tblr"}
    # dIOU.m's handling of an inverted box: both entries take the second one's value
    g["t"] = torch.where(s["t"] < s["b"], g["t"], g["b"])
    g["l"] = torch.where(s["l"] < s["r"], g["l"], g["r"])
    return g


def _to_xywh(g: Dict[str, Tensor]) -> Tensor:
    # to_xywh.m: dw = dr - dl (the chain rule gives (dr - dl) / 2), likewise dh
    return torch.stack([g["l"] + g["r"], g["t"] + g["b"], g["r"] - g["l"], g["b"] - g["t"]], -1)


def _giou_tblr(s: Dict[str, Tensor]) -> Dict[str, Tensor]:
    ct, cb, cl, cr = s["ct"], s["cb"], s["cl"], s["cr"]
    C = (cb - ct) * (cr - cl)
    zero = torch.zeros_like(C)
    dC = {"t": torch.where(s["t"] < s["tg"], -(cr - cl), zero), "b": torch.where(s["b"] > s["bg"], cr - cl, zero),
          "l": torch.where(s["l"] < s["lg"], -(cb - ct), zero), "r": torch.where(s["r"] > s["rg"], cb - ct, zero)}
    U = s["U"]
    penalty = {k: (C * s["dU"][k] - U * dC[k]) / C**2 for k in "tblr"}
    iou = _iou_tblr(s)
    return {k: torch.where(s["overlap"], iou[k] + torch.where(C > 0, penalty[k], zero), penalty[k]) for k in "tblr"}


def _diou_penalty(pred: Tensor, gt: Tensor, s: Dict[str, Tensor]) -> Tensor:
    """The script's direction for the distance term, in (x, y, w, h)."""
    ct, cb, cl, cr = s["ct"], s["cb"], s["cl"], s["cr"]
    cw, ch = cr - cl, cb - ct
    c2 = ch**2 + cw**2
    one, zero = torch.ones_like(c2), torch.zeros_like(c2)
    top, bottom = s["t"] < s["tg"], s["b"] > s["bg"]
    left, right = s["l"] < s["lg"], s["r"] > s["rg"]
    # one shared derivative record for the enclosing width and height (dCw == dCh)
    d_dx = torch.where(right, one, zero) - torch.where(left, one, zero)
    d_dy = torch.where(bottom, one, zero) - torch.where(top, one, zero)
    d_dw = torch.where(right, 0.5 * one, zero) - torch.where(left, -0.5 * one, zero)
    d_dh = torch.where(bottom, 0.5 * one, zero) - torch.where(top, -0.5 * one, zero)
    cw_dw = torch.where(left & right, -one, d_dw)  # the script's override when pred spans the target
    ch_dh = torch.where(top & bottom, -one, d_dh)
    dc2 = {"x": 2 * cw * d_dx + 2 * ch * d_dx, "y": 2 * cw * d_dy + 2 * ch * d_dy,
           "w": 2 * cw * cw_dw + 2 * ch * d_dw, "h": 2 * cw * d_dh + 2 * ch * ch_dh}
    x, y = pred[..., 0], pred[..., 1]
    xg, yg = gt[..., 0], gt[..., 1]
    rho2 = (x - xg) ** 2 + (y - yg) ** 2
    return torch.stack([(2 * (xg - x) * c2 - dc2["x"] * rho2) / c2**2,
                        (2 * (yg - y) * c2 - dc2["y"] * rho2) / c2**2,
                        dc2["w"] * rho2 / c2**2, dc2["h"] * rho2 / c2**2], -1)


def paper_direction(name: str, pred: Tensor, gt: Tensor) -> Tensor:
    """The script's ascent direction ``(dx, dy, dw, dh)`` for ``name`` in :data:`PAPER_LOSSES`;
    boxes are ``(N, 4)`` in cxcywh. The simulation steps ``pred + lr * (2 - IoU) * direction``."""
    if name not in PAPER_LOSSES:
        raise ValueError(f"name must be one of {', '.join(PAPER_LOSSES)} (the losses of the authors' script), "
                         f"got {name!r}")
    s = _terms(pred, gt)
    if name == "iou":
        return _to_xywh(_iou_tblr(s))
    if name == "giou":
        return _to_xywh(_giou_tblr(s))
    direction = _to_xywh(_iou_tblr(s)) + _diou_penalty(pred, gt, s)
    if name == "ciou":
        w, h = pred[..., 2], pred[..., 3]
        delta = torch.atan(gt[..., 2] / gt[..., 3]) - torch.atan(w / h)
        v = 4 / math.pi**2 * delta**2
        iou = torch.where(s["overlap"], s["I"] / s["U"], torch.zeros_like(v))
        alpha = v / (1 - iou + v + 1e-7)
        extra = torch.stack([torch.zeros_like(v), torch.zeros_like(v), 8 / math.pi**2 * delta * h,
                             -8 / math.pi**2 * delta * w], -1)
        direction = direction + alpha[..., None] * extra
    return direction
