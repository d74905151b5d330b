"""BCL's momentum-boosted RandAugment (Zhou et al., ICML 2022): per-sample augmentation strength.

Requires torchvision (imported when the transform is applied); :func:`boosted_augment_params`
(the sampling of ops, magnitudes and applications) needs only the standard library.
"""

from __future__ import annotations

import math
import random
from typing import List, Optional, Tuple

__all__ = ["RANDAUG_OPS", "boosted_magnitude", "boosted_augment_params", "BoostedRandAugment"]

# (name, min, max): the 15 operations and ranges of MediaBrain-SJTU/BCL data/randaug.py
RANDAUG_OPS: Tuple[Tuple[str, float, float], ...] = (
    ("shear_x", 0.0, 0.6), ("shear_y", 0.0, 0.6), ("translate_x", 0.0, 0.66), ("translate_y", 0.0, 0.66),
    ("rotate", 0.0, 60.0), ("autocontrast", 0.0, 1.0), ("invert", 0.0, 1.0), ("equalize", 0.0, 1.0),
    ("solarize", 0.0, 110.0), ("posterize", 4.0, 8.0), ("contrast", 0.1, 1.9), ("color", 0.1, 1.9),
    ("brightness", 0.1, 1.9), ("sharpness", 0.1, 1.9), ("cutout", 0.0, 0.4),
)
_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
_CUTOUT_FILL = (125, 123, 114)


def boosted_magnitude(w: float, k: int, max_strength: float = 30.0, u: Optional[float] = None) -> float:
    r"""RandAugment magnitude for strength ``w``: :math:`M_0 + (30 - M_0)\,w` with :math:`M_0 = 10`
    for ``k = 1`` (BCL-I), and :math:`M_0 + (30 - M_0)\,w\,u`, :math:`u \sim U(0, 1)`, with
    :math:`M_0 = 5` for ``k = 2`` (BCL-D), as the official dataset wrappers do ("training
    stability" minimum strengths).

    Example:
        >>> boosted_magnitude(0.5, k=1)
        20.0
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    if k == 1:
        return 10.0 + (max_strength - 10.0) * w
    u = random.random() if u is None else u
    return 5.0 + (max_strength - 5.0) * w * u


def boosted_augment_params(w: float, k: int = 1, rng: Optional[random.Random] = None,
                           max_strength: float = 30.0) -> List[Tuple[str, float]]:
    r"""Draw BCL's augmentation for one view of a sample with strength ``w``: ``k`` ops chosen
    with replacement from :data:`RANDAUG_OPS`, each applied with probability ``w``, at value
    :math:`M/30\,(\max - \min) + \min` (signed ops flip their sign with probability 1/2).
    Returns the applied ``(op, value)`` list (``w = 0``: nothing is applied).

    Example:
        >>> import random
        >>> boosted_augment_params(0.0, k=2, rng=random.Random(0))
        []
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (ops per view), got {k!r}")
    rng = rng or random.Random()
    m = boosted_magnitude(w, k, max_strength, u=rng.random() if k != 1 else None)
    out = []
    for name, lo, hi in rng.choices(RANDAUG_OPS, k=k):
        if rng.uniform(0, 1) < w:
            value = m / 30.0 * (hi - lo) + lo
            if name in _SIGNED and rng.random() > 0.5:
                value = -value
            out.append((name, value))
    return out


def _apply(img, name: str, v: float):
    from torchvision.transforms.v2 import functional as TF  # optional dependency

    size = TF.get_size(img)  # [h, w]
    h, w = size[0], size[1]
    if name in ("shear_x", "shear_y"):
        # PIL's affine (1, v, 0, 0, 1, 0) is a shear of atan(v)
        ang = math.degrees(math.atan(v))
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                         shear=[ang, 0.0] if name == "shear_x" else [0.0, ang])
    if name == "translate_x":
        return TF.affine(img, angle=0.0, translate=[int(v * w), 0], scale=1.0, shear=[0.0, 0.0])
    if name == "translate_y":
        return TF.affine(img, angle=0.0, translate=[0, int(v * h)], scale=1.0, shear=[0.0, 0.0])
    if name == "rotate":
        return TF.rotate(img, v)
    if name == "autocontrast":
        return TF.autocontrast(img)
    if name == "invert":
        return TF.invert(img)
    if name == "equalize":
        return TF.equalize(img)
    if name == "solarize":
        return TF.solarize(img, v if not hasattr(img, "is_floating_point") or not img.is_floating_point() else v / 255.0)
    if name == "posterize":
        return TF.posterize(img, max(1, int(v)))
    if name == "contrast":
        return TF.adjust_contrast(img, v)
    if name == "color":
        return TF.adjust_saturation(img, v)
    if name == "brightness":
        return TF.adjust_brightness(img, v)
    if name == "sharpness":
        return TF.adjust_sharpness(img, v)
    if name == "cutout":
        side = int(v * w)
        if side <= 0:
            return img
        x0 = max(0, int(random.uniform(0, w) - side / 2))
        y0 = max(0, int(random.uniform(0, h) - side / 2))
        return _cutout(img, x0, y0, min(w, x0 + side) - x0, min(h, y0 + side) - y0)
    raise ValueError(f"unknown op {name!r}")


def _cutout(img, x0: int, y0: int, cw: int, ch: int):
    from torchvision.transforms.v2 import functional as TF

    if hasattr(img, "dim"):  # tensor image (..., C, H, W)
        fill = [c / 255.0 for c in _CUTOUT_FILL] if img.is_floating_point() else list(_CUTOUT_FILL)
        out = img.clone()
        for c in range(out.shape[-3]):
            out[..., c, y0:y0 + ch, x0:x0 + cw] = fill[c % 3]
        return out
    import torch
    t = TF.pil_to_tensor(img)
    return TF.to_pil_image(_cutout(t, x0, y0, cw, ch).to(torch.uint8))


class BoostedRandAugment:
    """RandAugment whose strength follows BCL's per-sample momentum weight.

    ``transform(img, w)`` applies :func:`boosted_augment_params` (``k`` ops, each with
    probability ``w``, magnitude from :func:`boosted_magnitude`) to a PIL image or a uint8/float
    tensor image, with torchvision's v2 functional ops. ``k=1`` is BCL-I, ``k=2`` BCL-D. Put it
    after the SimCLR augmentations (random resized crop, flip, colour jitter, grayscale) and
    before ``ToTensor``, as the official pipeline does; ``w`` comes from
    :attr:`MomentumLossTracker.weights` for the sample's dataset index.

    Differences from the official PIL code: shears use torchvision's affine with the angle
    ``atan(v)`` (PIL's matrix form), and the cutout position uses Python's ``random``.
    """

    def __init__(self, k: int = 1, max_strength: float = 30.0, seed: Optional[int] = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int (ops per view), got {k!r}")
        self.k, self.max_strength = k, float(max_strength)
        self.rng = random.Random(seed)

    def __call__(self, img, w: float):
        for name, value in boosted_augment_params(float(w), self.k, self.rng, self.max_strength):
            img = _apply(img, name, value)
        return img

    def __repr__(self) -> str:
        return f"BoostedRandAugment(k={self.k}, max_strength={self.max_strength})"
