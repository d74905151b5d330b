"""BCL's boosted RandAugment: magnitude schedule, op sampling, and (with torchvision) the ops."""

import random

import pytest
import torch

from tailwise.data import BoostedRandAugment, boosted_augment_params, boosted_magnitude
from tailwise.data.boosted_augment import RANDAUG_OPS


def test_magnitude_schedule():
    assert boosted_magnitude(0.0, 1) == 10.0 and boosted_magnitude(1.0, 1) == 30.0
    assert boosted_magnitude(1.0, 2, u=0.5) == pytest.approx(5 + 25 * 0.5)
    assert boosted_magnitude(0.0, 2, u=0.9) == 5.0
    with pytest.raises(ValueError, match="w must be"):
        boosted_magnitude(1.5, 1)


def test_params_probability_and_values():
    rng = random.Random(0)
    assert all(boosted_augment_params(0.0, 2, rng) == [] for _ in range(50))
    draws = [boosted_augment_params(1.0, 2, rng) for _ in range(200)]
    assert all(len(d) == 2 for d in draws)  # w = 1: every chosen op applies
    ranges = {n: (lo, hi) for n, lo, hi in RANDAUG_OPS}
    for d in draws:
        for name, v in d:
            lo, hi = ranges[name]
            assert lo - 1e-9 <= abs(v) <= hi + 1e-9
    half = [len(boosted_augment_params(0.5, 1, rng)) for _ in range(2000)]
    assert 0.45 < sum(half) / 2000 < 0.55
    with pytest.raises(ValueError, match="k must"):
        boosted_augment_params(0.5, 0)


def test_transform_runs_on_tensor_images():
    pytest.importorskip("torchvision")
    aug = BoostedRandAugment(k=2, seed=0)
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for w in (0.0, 0.3, 1.0):
        for _ in range(20):
            out = aug(img, w)
            assert out.shape == img.shape and out.dtype == img.dtype
    assert torch.equal(aug(img, 0.0), img)
