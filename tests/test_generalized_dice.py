"""Generalized Dice: values vs a transcription of MONAI's GeneralizedDiceLoss, weights, edges."""

import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise.functional import generalized_dice_loss


def monai_gdl(p, g, w_type="square", batch=False, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5):
    """MONAI GeneralizedDiceLoss.forward on probabilities p and one-hot g (N, C, *S), mean reduction."""
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    axes = list(range(2, p.dim()))
    if batch:
        axes = [0] + axes
    inter = (p * g).sum(axes)
    ground_o, pred_o = g.sum(axes), p.sum(axes)
    w = {"square": lambda x: torch.reciprocal(x * x), "simple": torch.reciprocal,
         "uniform": torch.ones_like}[w_type](ground_o.float())
    infs = torch.isinf(w)
    if batch:
        w[infs] = 0.0
        w = w + infs * torch.max(w)
    else:
        w[infs] = 0.0
        w = w + infs * torch.max(w, dim=1)[0].unsqueeze(1)
    d = 0 if batch else 1
    numer = 2.0 * (inter * w).sum(d, keepdim=True) + smooth_nr
    denom = ((ground_o + pred_o) * w).sum(d, keepdim=True) + smooth_dr
    return (1.0 - numer / denom).mean()


def _case(g, shape=(3, 4, 5, 6), absent=True):
    n, c = shape[:2]
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n,) + shape[2:], generator=g)
    if absent:
        target[0][target[0] == 2] = 1  # class 2 absent from image 0: infinite weight path
    return logits, target


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_matches_monai(w_type, batch, include_background):
    g = torch.Generator().manual_seed(0)
    logits, target = _case(g)
    p = logits.softmax(1)
    onehot = F.one_hot(target, 4).movedim(-1, 1).to(p.dtype)
    ref = monai_gdl(p, onehot, w_type, batch, include_background)
    ours = generalized_dice_loss(logits, target, w_type=w_type, batch=batch, include_background=include_background)
    torch.testing.assert_close(ours, ref)
    # probabilities + one-hot target (MONAI's default call) give the same number
    ours2 = generalized_dice_loss(p, onehot, from_logits=False, w_type=w_type, batch=batch,
                                  include_background=include_background)
    torch.testing.assert_close(ours2, ref)


def test_hand_value_two_classes():
    # one image, 4 pixels; class 0 has 1 pixel, class 1 has 3; prediction p = 0.5 everywhere
    p = torch.full((1, 2, 4), 0.5, dtype=torch.float64)
    y = torch.tensor([[0, 1, 1, 1]])
    w0, w1 = 1.0, 1.0 / 9.0
    tp0, tp1 = 0.5, 1.5
    num = 2 * (w0 * tp0 + w1 * tp1) + 1e-5
    den = w0 * (2 + 1) + w1 * (2 + 3) + 1e-5
    assert generalized_dice_loss(p, y, from_logits=False).item() == pytest.approx(1 - num / den, rel=1e-12)


def test_gradcheck_3d_and_reductions():
    g = torch.Generator().manual_seed(1)
    logits, target = _case(g, (2, 3, 3, 2, 3), absent=False)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: generalized_dice_loss(z, target), (logits,))
    none = generalized_dice_loss(logits, target, reduction="none")
    assert none.shape == (2,)
    torch.testing.assert_close(none.sum(), generalized_dice_loss(logits, target, reduction="sum"))


def test_empty_masks_and_ignore_index():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)  # classes 1, 2 absent everywhere
    out = generalized_dice_loss(logits, target)
    assert torch.isfinite(out)
    ign = target.clone()
    ign[:, 0] = -100
    keep = generalized_dice_loss(logits[:, :, 1:], target[:, 1:])
    torch.testing.assert_close(generalized_dice_loss(logits, ign), keep)
    e = torch.zeros(0, 3, 4, 4, requires_grad=True)
    val = generalized_dice_loss(e, torch.zeros(0, 4, 4, dtype=torch.long))
    assert val.item() == 0.0 and val.grad_fn is not None


def test_module_and_errors():
    g = torch.Generator().manual_seed(2)
    logits, target = _case(g)
    crit = tailwise.build_loss("generalized_dice", w_type="simple")
    torch.testing.assert_close(crit(logits, target), generalized_dice_loss(logits, target, w_type="simple"))
    with pytest.raises(ValueError, match="w_type"):
        generalized_dice_loss(logits, target, w_type="cube")
    with pytest.raises(ValueError, match="smooth_nr"):
        generalized_dice_loss(logits, target, smooth_nr=-1)
    with pytest.raises(ValueError, match="target"):
        generalized_dice_loss(logits, target[:, :2])
