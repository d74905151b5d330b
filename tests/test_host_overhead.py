"""Host-side savings of the loss front-ends that must not change results (CPU).

* Per-class vectors derived from a module's buffers are cached per (tensor, version): an
  in-place update (optimiser step, ``load_state_dict``) is seen, a bad value written in place
  still raises, and tensors made afresh per call do not accumulate in the cache.
* The masked mean of the cross-entropy family divides by ``+inf`` instead of choosing between
  two branches: same values and gradients as the former ``torch.where`` form in every case.
"""

from __future__ import annotations

import gc
import math

import pytest
import torch

import tailwise
import tailwise.functional as TF
from tailwise import _validation
from tailwise._validation import _device_paths
from tailwise.classification._common import masked_reduce

COUNTS = [100.0, 40.0, 20.0, 6.0, 2.0]


def _data(seed=0, n=11, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("name", ["balanced_softmax", "logit_adjusted", "class_balanced", "bal_bce", "iif"])
@pytest.mark.parametrize("device_paths", [False, True])
def test_buffer_cache_follows_in_place_updates(name, device_paths):
    z, y = _data()
    mod = tailwise.build_loss(name, class_counts=COUNTS)
    other = tailwise.build_loss(name, class_counts=[5.0, 9.0, 30.0, 60.0, 1.0])
    ctx = _device_paths() if device_paths else torch.no_grad()
    with ctx:
        first = mod(z, y)
        assert torch.equal(mod(z, y), first)                  # cached: same value
        mod.load_state_dict(other.state_dict())              # copy_ into the buffers: a new version
        after = mod(z, y)
        assert torch.equal(after, other(z, y))
        assert not torch.equal(after, first)


def test_a_module_buffer_is_never_the_cached_tensor_of_its_list():
    """load_state_dict writes into the buffers: a buffer shared with the cache entry of the list
    it was built from would change what every later call with that list computes."""
    z, y = _data()
    want = TF.balanced_softmax_loss(z, y, COUNTS)
    a = tailwise.build_loss("balanced_softmax", class_counts=COUNTS)
    b = tailwise.build_loss("balanced_softmax", class_counts=COUNTS)
    a.load_state_dict(tailwise.build_loss("balanced_softmax", class_counts=[1.0, 2, 3, 4, 5]).state_dict())
    assert torch.equal(TF.balanced_softmax_loss(z, y, COUNTS), want)
    assert torch.equal(b(z, y), want)
    assert not torch.equal(a(z, y), want)


def test_buffer_cache_rechecks_a_bad_value_written_in_place():
    z, y = _data()
    mod = tailwise.build_loss("balanced_softmax", class_counts=COUNTS)
    mod(z, y)
    mod.class_counts[2] = -1.0
    with pytest.raises(ValueError, match="class_counts"):
        mod(z, y)
    with _device_paths(), pytest.raises(RuntimeError, match="class_counts"):
        mod(z, y)


def test_fresh_tensors_do_not_stay_in_the_cache():
    z, y = _data()
    gc.collect()
    before = len(_validation._COUNTS_CACHE)
    for _ in range(5):
        TF.balanced_softmax_loss(z, y, torch.tensor(COUNTS))
        TF.focal_loss(z, y, alpha=torch.tensor(0.5))   # a 0-d alpha, expanded per call
    gc.collect()
    assert len(_validation._COUNTS_CACHE) <= before + 1   # the 0-d alpha's own entry at most


def test_focal_module_with_a_number_alpha_keeps_one_entry():
    z, y = _data()
    mod = tailwise.FocalLoss(alpha=0.25)
    want = mod(z, y)
    gc.collect()
    before = len(_validation._COUNTS_CACHE)
    for _ in range(4):
        assert torch.equal(mod(z, y), want)
    gc.collect()
    assert len(_validation._COUNTS_CACHE) == before


def test_inference_tensors_are_not_cached():
    z, y = _data()
    with torch.inference_mode():
        counts = torch.tensor(COUNTS)
    want = TF.balanced_softmax_loss(z, y, COUNTS)
    assert torch.equal(TF.balanced_softmax_loss(z, y, counts), want)


def _old_masked_mean(total, denom):
    # the former form of masked_reduce's mean
    return torch.where(denom > 0, total / denom.clamp_min(1e-12), total * 0.0)


@pytest.mark.parametrize("case", ["some", "all_ignored", "zero_weights", "nan", "inf", "tiny"])
def test_masked_mean_equals_the_former_where_form(case):
    g = torch.Generator().manual_seed(1)
    loss = torch.rand(9, generator=g, dtype=torch.float64)
    valid = torch.rand(9, generator=g) > 0.4
    w = None
    if case == "all_ignored":
        valid[:] = False
    if case in ("all_ignored", "some"):
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    if case == "zero_weights":
        w = torch.zeros(9, dtype=torch.float64)
    if case == "nan":
        valid[:] = False
        loss[2] = math.nan
    if case == "inf":
        valid[:] = False
        loss[2] = math.inf
    if case == "tiny":
        w = torch.full((9,), 1e-14, dtype=torch.float64)
    a = loss.clone().requires_grad_(True)
    got = masked_reduce(a, "mean", None, valid, w)
    got.backward()
    b = loss.clone().requires_grad_(True)
    denom = ((w * valid).sum() if w is not None else valid.sum()).to(b.dtype)
    want = _old_masked_mean(b.sum(), denom)
    want.backward()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(a.grad, b.grad, equal_nan=True, rtol=0, atol=0)


def test_a_buffer_updated_every_step_keeps_one_entry():
    """A per-class tensor changed in place every step (a learnable class weight, a running
    statistic) replaces its cache entry: it neither fills the cache (pushing out cached host
    data, whose rebuild copies to the device again) nor registers a finalizer per step."""
    z, y = _data()
    w = torch.nn.Parameter(torch.ones(5))
    TF.balanced_softmax_loss(z, y, COUNTS)          # a host-data entry that must survive
    gc.collect()
    size = len(_validation._COUNTS_CACHE)
    for step in range(3 * _validation._COUNTS_CACHE_SIZE):
        loss = TF.cross_entropy_loss(z, y, class_weight=w)
        with torch.no_grad():
            w.add_(0.01)                              # a new version every step
    assert len(_validation._COUNTS_CACHE) <= size + 1
    assert len(_validation._TENSOR_ENTRIES[id(w)]) == 1
    want = TF.cross_entropy_loss(z, y, class_weight=w.detach().clone())
    assert torch.equal(TF.cross_entropy_loss(z, y, class_weight=w), want)   # the latest version
    key = next(iter(_validation._TENSOR_ENTRIES[id(w)].values()))
    wid = id(w)
    del w, loss
    gc.collect()
    assert wid not in _validation._TENSOR_ENTRIES and key not in _validation._COUNTS_CACHE
