import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dist_harness import run_distributed
from tailwise.data import (ClassBalancedSampler, MinorityWeightedSampler, ProgressivelyBalancedSampler,
                           SquareRootSampler, class_counts, cmo_mix, long_tailed_counts, long_tailed_indices)
from tailwise.data.cmo import rand_bbox


def balanced_labels(num_classes, per_class, shuffle_seed=None):
    y = np.repeat(np.arange(num_classes), per_class)
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(y)
    return torch.as_tensor(y)


# ----------------------------------------------------------------------------- LT subsets
def test_cifar_lt_published_counts():
    # CIFAR-10-LT / CIFAR-100-LT with IF=100 have 12406 / 10847 training images (Cao et al. 2019).
    c10 = long_tailed_counts(10, 5000, 100)
    assert c10 == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(c10) == 12406
    assert sum(long_tailed_counts(100, 500, 100)) == 10847
    assert sum(long_tailed_counts(10, 5000, 10)) == 20431
    assert long_tailed_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tailed_counts(5, 10, 2, "step") == [10, 10, 5, 5, 5]
    assert long_tailed_counts(1, 7, 50) == [7]
    assert long_tailed_counts(4, 9, 1) == [9] * 4


def _official_subset(y, imb_factor, seed, counts):
    # The LDAM-DRW selection, written out with the global numpy RNG.
    np.random.seed(seed)
    out = []
    for c, n in zip(np.unique(y), counts):
        idx = np.where(y == c)[0]
        np.random.shuffle(idx)
        out.append(idx[:n])
    return np.sort(np.concatenate(out))


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_subset_counts_match_formula_and_official_selection(profile):
    y = balanced_labels(10, 200, shuffle_seed=3)
    idx = long_tailed_indices(y, 50, profile=profile, seed=7)
    assert idx.dtype == torch.int64
    assert bool((idx[1:] > idx[:-1]).all())  # sorted, unique
    expected = [int(200 * (0.02 ** (r / 9.0))) for r in range(10)] if profile == "exp" else [200] * 5 + [4] * 5
    assert class_counts(y[idx]).tolist() == expected
    np.testing.assert_array_equal(idx.numpy(), _official_subset(y.numpy(), 1 / 50, 7, expected))


def test_subset_determinism_and_seed_dependence():
    y = balanced_labels(5, 100, shuffle_seed=0)
    a = long_tailed_indices(y, 10, seed=1)
    assert torch.equal(a, long_tailed_indices(y, 10, seed=1))
    assert not torch.equal(a, long_tailed_indices(y, 10, seed=2))


def test_class_order_and_n_max():
    y = balanced_labels(4, 50)
    idx = long_tailed_indices(y, 10, class_order=[2, 0, 3, 1])
    counts = class_counts(y[idx]).tolist()
    per_rank = long_tailed_counts(4, 50, 10)
    assert counts == [per_rank[1], per_rank[3], per_rank[0], per_rank[2]]
    # n_max defaults to the smallest available class count
    y2 = torch.cat([balanced_labels(3, 40), torch.full((10,), 1)])
    assert class_counts(y2[long_tailed_indices(y2, 4)]).tolist() == long_tailed_counts(3, 40, 4)
    assert class_counts(y2[long_tailed_indices(y2, 4, max_per_class=20)]).tolist() == long_tailed_counts(3, 20, 4)
    with pytest.raises(ValueError, match="max_per_class"):
        long_tailed_indices(y2, 4, max_per_class=45)


def test_subset_bad_inputs():
    y = balanced_labels(3, 10)
    with pytest.raises(ValueError, match="imbalance_factor must be >= 1"):
        long_tailed_indices(y, 0.5)
    with pytest.raises(ValueError, match="profile must be one of"):
        long_tailed_indices(y, 10, profile="linear")
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] have no samples"):
        long_tailed_indices(y, 10, num_classes=4)
    with pytest.raises(TypeError, match="labels must hold integer"):
        long_tailed_indices(y.float(), 10)
    with pytest.raises(ValueError, match=r"labels must be a 1-D tensor.*\(N,\)"):
        long_tailed_indices(y.view(3, 10), 10)
    with pytest.raises(ValueError, match="non-negative"):
        class_counts(torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="permutation"):
        long_tailed_indices(y, 10, class_order=[0, 0, 1])
    with pytest.raises(ValueError, match="labels must not be empty"):
        long_tailed_indices(torch.zeros(0, dtype=torch.long), 10)


def test_class_counts():
    assert class_counts([2, 0, 2]).tolist() == [1, 0, 2]
    assert class_counts(np.array([1, 1]), num_classes=4).tolist() == [0, 2, 0, 0]
    with pytest.raises(ValueError, match="num_classes=2"):
        class_counts([0, 5], num_classes=2)


@given(num_classes=st.integers(1, 12), per_class=st.integers(1, 60),
       factor=st.floats(1.0, 500.0), profile=st.sampled_from(["exp", "step"]), seed=st.integers(0, 2 ** 31))
def test_subset_property(num_classes, per_class, factor, profile, seed):
    y = balanced_labels(num_classes, per_class, shuffle_seed=seed % 97)
    idx = long_tailed_indices(y, factor, profile=profile, seed=seed)
    counts = class_counts(y[idx], num_classes).tolist()
    assert counts == long_tailed_counts(num_classes, per_class, factor, profile)
    assert counts[0] == per_class and all(a >= b for a, b in zip(counts, counts[1:]))
    # the tail is n_max / IF up to flooring
    assert counts[-1] == int(per_class * (1.0 / factor)) or num_classes == 1
    assert len(set(idx.tolist())) == idx.numel()


# ----------------------------------------------------------------------------- samplers
LT = torch.as_tensor(np.repeat(np.arange(4), [400, 100, 25, 9]))


def _freq(sampler, labels, num_classes):
    drawn = torch.as_tensor(list(sampler))
    return torch.bincount(labels[drawn], minlength=num_classes).double() / drawn.numel()


@pytest.mark.parametrize("make,expected", [
    (lambda **kw: ClassBalancedSampler(LT, **kw), [0.25] * 4),
    (lambda **kw: SquareRootSampler(LT, **kw), [20 / 38, 10 / 38, 5 / 38, 3 / 38]),
    (lambda **kw: MinorityWeightedSampler(LT, **kw), [0.25] * 4),
    (lambda **kw: MinorityWeightedSampler(LT, power=2.0, **kw),
     [(1 / n) / sum(1 / m for m in (400, 100, 25, 9)) for n in (400, 100, 25, 9)]),
])
def test_sampler_class_frequencies(make, expected):
    sampler = make(num_samples=40000, seed=0)
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(sampler.class_probabilities(), expected)
    freq = _freq(sampler, LT, 4)
    # 40000 draws: binomial std <= 0.0025, so 0.012 is ~5 sigma
    assert torch.allclose(freq, expected, atol=0.012), (freq, expected)


def test_within_class_draw_is_uniform():
    sampler = ClassBalancedSampler(LT, num_samples=40000, seed=1)
    drawn = torch.as_tensor(list(sampler))
    tail = drawn[LT[drawn] == 3]  # class 3 = indices 525..533
    freq = torch.bincount(tail - 525, minlength=9).double() / tail.numel()
    assert torch.allclose(freq, torch.full((9,), 1 / 9, dtype=torch.float64), atol=0.02)


def test_progressive_sampler_schedule():
    s = ProgressivelyBalancedSampler(LT, num_epochs=4, num_samples=40000)
    inst = LT.bincount().double() / LT.numel()
    for epoch in (0, 1, 2, 4, 9):
        s.set_epoch(epoch)
        t = min(epoch, 4) / 4
        expected = (1 - t) * inst + t * 0.25
        torch.testing.assert_close(s.class_probabilities(), expected)
        assert torch.allclose(_freq(s, LT, 4), expected, atol=0.012)


def test_sampler_determinism_epochs_and_absent_classes():
    s = SquareRootSampler(LT, seed=5)
    a = list(s)
    assert a == list(s) and len(a) == len(LT)
    s.set_epoch(1)
    b = list(s)
    assert a != b
    s.set_epoch(0)
    assert list(s) == a
    assert list(SquareRootSampler(LT, seed=6)) != a
    # class 1 missing: balanced over the classes that exist
    y = torch.tensor([0, 0, 0, 2])
    torch.testing.assert_close(ClassBalancedSampler(y).class_probabilities(),
                               torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    drawn = y[torch.as_tensor(list(ClassBalancedSampler(y, num_samples=200)))]
    assert 1 not in drawn and set(drawn.tolist()) == {0, 2}


def test_sampler_shards_partition_one_global_draw():
    for world in (2, 3):
        shards = [list(ClassBalancedSampler(LT, num_samples=1001, num_replicas=world, rank=r, seed=3))
                  for r in range(world)]
        sizes = {len(s) for s in shards}
        assert sizes == {math.ceil(1001 / world)}
        full = ClassBalancedSampler(LT, num_samples=1001, num_replicas=world, rank=0, seed=3).global_indices()
        assert full.numel() == world * math.ceil(1001 / world)
        # rank r holds exactly positions r, r+W, ...: the shards are disjoint slices of one draw
        interleaved = torch.stack([torch.as_tensor(s) for s in shards], 1).flatten()
        assert torch.equal(interleaved, full)


def test_sampler_in_dataloader():
    ds = torch.utils.data.TensorDataset(torch.arange(len(LT)), LT)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, sampler=ClassBalancedSampler(LT, num_samples=256))
    seen = torch.cat([y for _, y in loader])
    assert seen.numel() == 256


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="rank must be in"):
        ClassBalancedSampler(LT, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        ClassBalancedSampler(LT, num_samples=0)
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        ProgressivelyBalancedSampler(LT, num_epochs=0)
    with pytest.raises(TypeError, match="labels must hold integer"):
        SquareRootSampler(torch.rand(5))
    with pytest.raises(ValueError, match="power must be >= 0"):
        MinorityWeightedSampler(LT, power=-1)
    with pytest.raises(ValueError, match="labels must not be empty"):
        ClassBalancedSampler([])


class _LightningLikeWrapper(torch.utils.data.DistributedSampler):
    """What Lightning's ``DistributedSamplerWrapper`` does to a custom sampler under DDP: the
    sampler's whole output becomes a list that a ``DistributedSampler`` (shuffle=True, seed 0)
    shards by position. Re-implemented here from its documented behaviour so the test needs no
    lightning."""

    def __init__(self, sampler, num_replicas, rank):
        self.sampler = sampler
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=0)

    def __iter__(self):
        drawn = list(self.sampler)  # every rank materialises the same list (same seed + epoch)
        return (drawn[i] for i in super().__iter__())


def _lightning_epoch(rank, world_size, make_sampler, epoch):
    sampler = make_sampler()
    sampler.set_epoch(epoch)  # the user's on_train_epoch_start hook (see docs/data.md)
    wrapper = _LightningLikeWrapper(sampler, world_size, rank)
    wrapper.set_epoch(epoch)  # what Lightning calls itself
    loader = torch.utils.data.DataLoader(list(range(len(LT))), batch_size=8, sampler=wrapper)
    return [int(i) for batch in loader for i in batch]


def test_sampler_does_not_shard_itself_in_a_process_group(monkeypatch):
    """Rank 1 of 2 in an initialised group (simulated): the default sampler yields the whole
    epoch, so the Lightning-style wrapper gives each rank half of a full epoch (12 batches of
    8 for 192 samples, not 6)."""
    from tailwise import distributed as twdist

    monkeypatch.setattr(twdist, "is_dist_initialized", lambda: True)
    monkeypatch.setattr(twdist, "get_world_size", lambda: 2)
    monkeypatch.setattr(twdist, "get_rank", lambda: 1)
    for cls in (ClassBalancedSampler, SquareRootSampler, MinorityWeightedSampler):
        assert len(cls(LT, num_samples=192)) == 192
    from tailwise.data import ClassAwareSampler

    assert len(ClassAwareSampler(LT, num_samples=192)) == 192
    make = functools.partial(ClassBalancedSampler, LT, num_samples=192, seed=4)
    shards = [_lightning_epoch(r, 2, make, epoch=3) for r in range(2)]
    assert [len(s) for s in shards] == [96, 96]
    assert [math.ceil(len(s) / 8) for s in shards] == [12, 12]
    full = make()
    full.set_epoch(3)
    # the two ranks together hold exactly one full epoch of the sampler's draw
    assert sorted(shards[0] + shards[1]) == sorted(full.global_indices().tolist())
    # asked explicitly, it shards itself from the (simulated) group, as DistributedSampler
    own = ClassBalancedSampler(LT, num_samples=192, distributed=True)
    assert (own.num_replicas, own.rank, len(own)) == (2, 1, 96)
    assert ClassBalancedSampler(LT, num_samples=192, num_replicas=4).num_replicas == 4


def test_sampler_distributed_needs_a_group():
    with pytest.raises(RuntimeError, match="initialised torch.distributed process group"):
        ClassBalancedSampler(LT, distributed=True)
    with pytest.raises(RuntimeError, match="pass both explicitly"):
        ClassBalancedSampler(LT, rank=0)
    with pytest.raises(TypeError, match="distributed must be a bool"):
        ClassBalancedSampler(LT, distributed=1)


def _sampler_worker(rank, world_size):
    mine = ClassBalancedSampler(LT, num_samples=101, seed=9, distributed=True)
    mine.set_epoch(2)
    unsharded = ClassBalancedSampler(LT, num_samples=101, seed=9)
    make = functools.partial(ClassBalancedSampler, LT, num_samples=101, seed=9)
    return {"mine": list(mine), "rank": mine.rank, "world": mine.num_replicas,
            "unsharded_len": len(unsharded), "unsharded_world": unsharded.num_replicas,
            "wrapped": _lightning_epoch(rank, world_size, make, epoch=2)}


@pytest.mark.distributed
def test_sampler_sharding_in_a_real_process_group():
    res = run_distributed(_sampler_worker, 2)
    # distributed=True reads the group
    assert [r["rank"] for r in res] == [0, 1] and all(r["world"] == 2 for r in res)
    assert len(res[0]["mine"]) == len(res[1]["mine"]) == 51
    ref = ClassBalancedSampler(LT, num_samples=101, num_replicas=2, rank=0, seed=9)
    ref.set_epoch(2)
    full = ref.global_indices().tolist()
    assert res[0]["mine"] == full[0::2] and res[1]["mine"] == full[1::2]
    # the default does not shard, and the Lightning-style wrapper then covers one full epoch
    assert all(r["unsharded_len"] == 101 and r["unsharded_world"] == 1 for r in res)
    one = ClassBalancedSampler(LT, num_samples=101, seed=9)
    one.set_epoch(2)
    wrapped = res[0]["wrapped"] + res[1]["wrapped"]
    assert len(res[0]["wrapped"]) == len(res[1]["wrapped"]) == 51  # DistributedSampler pads 101 -> 102
    assert set(wrapped) == set(one.global_indices().tolist())


# ----------------------------------------------------------------------------- CMO
def test_rand_bbox_matches_official_geometry():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        lam = float(torch.rand(()))
        y1, x1, y2, x2 = rand_bbox(32, 24, lam, g)
        assert 0 <= y1 <= y2 <= 32 and 0 <= x1 <= x2 <= 24
        cut_h, cut_w = int(32 * math.sqrt(1 - lam)), int(24 * math.sqrt(1 - lam))
        assert y2 - y1 <= 2 * (cut_h // 2) and x2 - x1 <= 2 * (cut_w // 2)
    # a centred box is exactly 2 * (cut // 2) wide (official rounding)
    y1, x1, y2, x2 = rand_bbox(10, 10, 0.0, torch.Generator().manual_seed(1))
    assert (y2 - y1, x2 - x1) != (0, 0)


def test_cmo_mix_pastes_box_and_area_lambda():
    g = torch.Generator().manual_seed(0)
    bg = torch.zeros(4, 3, 16, 16)
    fg = torch.arange(1.0, 7.0).view(6, 1, 1, 1).expand(6, 3, 16, 16).clone()
    lab, fg_lab = torch.tensor([0, 0, 1, 0]), torch.tensor([5, 6, 7, 8, 9, 9])
    out = cmo_mix(bg, lab, fg, fg_lab, generator=g)
    y1, x1, y2, x2 = out.box
    assert (y2 - y1) * (x2 - x1) > 0
    assert out.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 256)
    for i in range(4):
        expect = torch.zeros(3, 16, 16)
        expect[:, y1:y2, x1:x2] = i + 1
        assert torch.equal(out.images[i], expect)
        # the foreground fraction of each image equals 1 - lam
        assert (out.images[i] != 0).double().mean().item() == pytest.approx(1 - out.lam)
    assert torch.equal(bg, torch.zeros(4, 3, 16, 16))  # input untouched
    assert torch.equal(out.target_a, lab) and torch.equal(out.target_b, fg_lab[:4])
    soft = out.soft_targets(10)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert soft[0, 0].item() == pytest.approx(out.lam) and soft[0, 5].item() == pytest.approx(1 - out.lam)
    # the official two-term loss equals cross-entropy with the soft targets
    logits = torch.randn(4, 10)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(out.loss(ce, logits), ce(logits, soft))


def _official_area_lambdas(h, w, n, rng):
    out = np.empty(n)
    for i in range(n):
        lam = rng.beta(1.0, 1.0)
        r = np.sqrt(1.0 - lam)
        ch, cw = int(h * r), int(w * r)
        cy, cx = rng.randint(h), rng.randint(w)
        y1, y2 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        x1, x2 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        out[i] = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return out


def test_cmo_mix_determinism_prob_and_beta():
    bg, fg = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    a = cmo_mix(bg, y, fg, y, generator=torch.Generator().manual_seed(3))
    b = cmo_mix(bg, y, fg, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and a.lam == b.lam and a.box == b.box
    off = cmo_mix(bg, y, fg, y, prob=0.0, generator=torch.Generator().manual_seed(3))
    assert off.lam == 1.0 and torch.equal(off.images, bg)
    # area-adjusted lambda: same distribution as the official numpy procedure (independent copy)
    g = torch.Generator().manual_seed(0)
    lams = np.array([cmo_mix(bg, y, fg, y, generator=g).lam for _ in range(3000)])
    ref = _official_area_lambdas(8, 8, 20000, np.random.RandomState(0))
    assert lams.min() >= 0.0 and lams.max() <= 1.0
    assert abs(lams.mean() - ref.mean()) < 0.02
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(lams, q) - np.quantile(ref, q)) < 0.05
    g = torch.Generator().manual_seed(0)
    skewed = [cmo_mix(bg, y, fg, y, alpha=0.2, generator=g).lam for _ in range(300)]
    assert len(set(skewed)) > 5


def test_cmo_mix_bad_inputs():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"images must be 4-D"):
        cmo_mix(torch.zeros(2, 8, 8), y, x, y)
    with pytest.raises(ValueError, match="fg_images must hold at least"):
        cmo_mix(x, y, x[:1], y[:1])
    with pytest.raises(ValueError, match="labels must have one entry per image"):
        cmo_mix(x, y[:1], x, y)
    with pytest.raises(ValueError, match=r"same \(C, H, W\)"):
        cmo_mix(x, y, torch.zeros(2, 3, 4, 4), y)
    with pytest.raises(ValueError, match="prob must be in"):
        cmo_mix(x, y, x, y, prob=2.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        cmo_mix(x, y, x, y, alpha=0.0)


def test_cmo_with_minority_sampler_end_to_end():
    images = torch.randn(len(LT), 1, 4, 4)
    ds = torch.utils.data.TensorDataset(images, LT)
    bg_loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    fg_loader = torch.utils.data.DataLoader(ds, batch_size=32, sampler=MinorityWeightedSampler(LT, num_samples=4000))
    fg_iter = iter(fg_loader)
    g = torch.Generator().manual_seed(0)
    fg_classes = []
    for x, y in bg_loader:
        fx, fy = next(fg_iter)
        out = cmo_mix(x, y, fx, fy, generator=g)
        fg_classes.append(out.target_b)
    freq = torch.bincount(torch.cat(fg_classes), minlength=4).double()
    freq /= freq.sum()
    assert freq[3] > 0.15  # the 9-sample class is ~1/4 of the foregrounds, vs 1.7% of the data
