"""pytorch-metric-learning's options on SupCon / NT-Xent: a labelled reference set
(``ref_features``/``ref_labels``) and ``zero_if_no_negatives``.

The scenarios are PML's own (tests/losses/test_ntxent_loss.py: the 2-D angle embeddings, the
reference-set pairs, the batches without valid pairs), compared with independent loops written
here: per anchor, per positive, the denominator summed term by term.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise._validation import _device_paths
from tailwise.functional import ntxent_loss, supcon_loss
from tests.test_contract import _no_host_reads, _refuse_host_to_device

TOL = dict(rtol=1e-4, atol=1e-4)


def angle_to_coord(angle, normalized=False):
    """PML's test helper: a 2-D point at ``angle`` degrees (stretched unless ``normalized``)."""
    x, y = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    if not normalized:
        x, y = x * 2, y * 0.5
    return x, y


def angles(values, dtype=torch.float64, normalized=True):
    return torch.tensor([angle_to_coord(a, normalized) for a in values], dtype=dtype)


def naive_supcon(feats, labels, ref=None, ref_labels=None, exclude_diag=False, t=0.1, tb=None,
                 contrast_mode="all"):
    """Per-sample SupCon by loops. ``feats`` (N, V, D) unit rows.

    Without ``ref``: contrast = every view minus the anchor itself (SupContrast). With ``ref``:
    contrast = the reference rows, minus row i for sample i's anchors when ``exclude_diag``.
    Anchors without positives give 0; each sample averages its anchor views.
    """
    tb = t if tb is None else tb
    n, v, _ = feats.shape
    out = []
    for i in range(n):
        views = [0] if contrast_mode == "one" else range(v)
        per_view = []
        for k in views:
            a = feats[i, k]
            if ref is None:
                cset = [(feats[j, kk], labels[j]) for kk in range(v) for j in range(n) if (j, kk) != (i, k)]
            else:
                cset = [(ref[j], ref_labels[j]) for j in range(len(ref)) if not (exclude_diag and j == i)]
            den = sum(math.exp(float(a @ c) / t) for c, _ in cset)
            logp = [float(a @ c) / t - math.log(den) for c, lab in cset if lab == labels[i]]
            per_view.append(-(t / tb) * sum(logp) / len(logp) if logp else 0.0)
        out.append(sum(per_view) / len(per_view))
    return torch.tensor(out, dtype=torch.float64)


def naive_ntxent(feats, labels, ref=None, ref_labels=None, exclude_diag=True, t=0.1):
    """PML NTXentLoss by loops: each positive pair against the anchor's negatives only."""
    if ref is None:
        ref, ref_labels = feats, labels
    losses = []
    for a in range(len(feats)):
        for p in range(len(ref)):
            if labels[a] != ref_labels[p] or (exclude_diag and a == p):
                continue
            num = math.exp(float(feats[a] @ ref[p]) / t)
            den = num + sum(math.exp(float(feats[a] @ ref[q]) / t) for q in range(len(ref))
                            if ref_labels[q] != labels[a])
            losses.append(-math.log(num / den))
    return sum(losses) / len(losses) if losses else 0.0


def avg_non_zero(per_sample):
    """PML's AvgNonZeroReducer."""
    nz = per_sample[per_sample > 0]
    return nz.mean() if nz.numel() else per_sample.sum() * 0


# ------------------------------------------------------------------ PML's own scenarios


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_pml_angles_scenario(dtype):
    """PML test_ntxent_loss: angles 0,10,20,50,60,80 and labels 0,0,0,1,1,2 at temperature 0.1."""
    t = 0.1
    emb = angles([0, 10, 20, 50, 60, 80], dtype=dtype)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    e64 = emb.double()
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else TOL
    want = naive_supcon(e64[:, None], labels, t=t)
    assert want[5] == 0.0 and (want[:5] > 0).all()  # class 2 has no positive
    got = supcon_loss(emb, labels, temperature=t, base_temperature=t, reduction="none",
                      zero_if_no_negatives=True)
    torch.testing.assert_close(got.double(), want, **tol)
    # PML's SupConLoss value: the average over anchors with a non-zero loss (here 5 of 6)
    torch.testing.assert_close(avg_non_zero(got.double()), want[:5].mean(), **tol)
    got_nt = ntxent_loss(emb, labels, temperature=t)
    assert got_nt.item() == pytest.approx(naive_ntxent(e64, labels, t=t), rel=tol["rtol"])


@pytest.mark.parametrize("seed", [139, 5])
def test_pml_reference_set_scenario(seed):
    """PML get_pair_embeddings_with_ref: 4 anchors labelled 0,0,1,1 against 3 references 0,1,2."""
    g = torch.Generator().manual_seed(seed)
    t = 0.1
    emb = F.normalize(torch.randn(4, 32, generator=g, dtype=torch.float64), dim=1)
    ref = F.normalize(torch.randn(3, 32, generator=g, dtype=torch.float64), dim=1)
    labels, ref_labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2])
    want = naive_supcon(emb[:, None], labels, ref, ref_labels, t=t)
    got = supcon_loss(emb, labels, temperature=t, base_temperature=t, reduction="none",
                      ref_features=ref, ref_labels=ref_labels)
    torch.testing.assert_close(got, want, **TOL)
    # each anchor has one positive in the reference set: PML's value is the plain mean
    assert (want > 0).all()
    torch.testing.assert_close(supcon_loss(emb, labels, temperature=t, base_temperature=t, ref_features=ref,
                                           ref_labels=ref_labels), want.mean(), **TOL)
    assert ntxent_loss(emb, labels, ref_features=ref, ref_labels=ref_labels, temperature=t).item() == \
        pytest.approx(naive_ntxent(emb, labels, ref, ref_labels, exclude_diag=False, t=t), rel=1e-4)


@pytest.mark.parametrize("angle_set,labels", [([0], [0]), ([0, 10, 20], [0, 0, 0]), ([0, 40, 60], [1, 2, 3])])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_pml_no_valid_pairs_give_zero(angle_set, labels, dtype):
    """PML test_with_no_valid_pairs: unnormalised 2-D points; SupCon and NT-Xent return 0, backward runs."""
    labels = torch.tensor(labels)
    for fn in (lambda e: supcon_loss(e, labels, temperature=0.1, normalize=True, zero_if_no_negatives=True),
               lambda e: ntxent_loss(e, labels, temperature=0.1, normalize=True, zero_if_no_negatives=True),
               lambda e: ntxent_loss(e, labels, temperature=0.1, normalize=True)):
        emb = angles(angle_set, dtype=dtype, normalized=False).requires_grad_()
        loss = fn(emb)
        loss.backward()
        assert loss.item() == 0.0 and loss.grad_fn is not None
        assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_without_the_option_supcon_keeps_the_supcontrast_value():
    # all one label: SupContrast (the default) still scores the spread of the positives
    emb = angles([0, 10, 20])
    labels = torch.zeros(3, dtype=torch.long)
    got = supcon_loss(emb, labels, temperature=0.1, reduction="none")
    torch.testing.assert_close(got, naive_supcon(emb[:, None], labels, t=0.1, tb=0.07), **TOL)
    assert (got > 0).all()


def test_pml_backward_scenario():
    """PML test_backward: angles 0..80 step 20, labels 0,0,1,1,2; finite gradients."""
    for fn in (supcon_loss, ntxent_loss):
        emb = angles([0, 20, 40, 60, 80], normalized=False).requires_grad_()
        fn(emb, torch.tensor([0, 0, 1, 1, 2]), temperature=0.1, normalize=True,
           zero_if_no_negatives=True).backward()
        assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


# ------------------------------------------------------------------ reference-set semantics


def test_ref_is_the_batch_only_when_labels_are_the_same_tensor():
    z = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    # PML: `ref_labels is labels` -> row i is left out for anchor i: the plain in-batch loss
    torch.testing.assert_close(supcon_loss(z, y, ref_features=z, ref_labels=y), supcon_loss(z, y))
    torch.testing.assert_close(ntxent_loss(z, y, ref_features=z, ref_labels=y), ntxent_loss(z, y))
    # an equal but distinct label tensor: nothing is excluded, the anchor is its own positive
    y2 = y.clone()
    want = naive_supcon(z[:, None], y, z, y2, t=0.07)
    torch.testing.assert_close(supcon_loss(z, y, ref_features=z, ref_labels=y2, reduction="none"), want, **TOL)
    assert ntxent_loss(z, y, ref_features=z, ref_labels=y2).item() == \
        pytest.approx(naive_ntxent(z, y, z, y2, exclude_diag=False, t=0.07), rel=1e-6)
    # same label tensor, different reference rows (e.g. the second view): row i still left out
    r = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    want = naive_supcon(z[:, None], y, r, y, exclude_diag=True, t=0.07)
    torch.testing.assert_close(supcon_loss(z, y, ref_features=r, ref_labels=y, reduction="none"), want, **TOL)
    assert ntxent_loss(z, y, ref_features=r, ref_labels=y).item() == \
        pytest.approx(naive_ntxent(z, y, r, y, exclude_diag=True, t=0.07), rel=1e-6)


@pytest.mark.parametrize("mode", ["all", "one"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_ref_with_views_modes_and_chunks(mode, chunk):
    z = F.normalize(torch.randn(5, 3, 4, dtype=torch.float64), dim=-1)
    r = F.normalize(torch.randn(9, 4, dtype=torch.float64), dim=-1)
    y, ry = torch.tensor([0, 1, 1, 3, 2]), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 1])  # label 3: no positive
    w = torch.rand(5, dtype=torch.float64)
    want = naive_supcon(z, y, r, ry, t=0.2, tb=0.1, contrast_mode=mode)
    assert want[3] == 0.0
    kw = dict(ref_features=r, ref_labels=ry, temperature=0.2, base_temperature=0.1, contrast_mode=mode,
              chunk_size=chunk)
    torch.testing.assert_close(supcon_loss(z, y, reduction="none", **kw), want, **TOL)
    torch.testing.assert_close(supcon_loss(z, y, sample_weight=w, reduction="sum", **kw), (want * w).sum(), **TOL)
    crit = tailwise.build_loss("supcon", temperature=0.2, base_temperature=0.1, contrast_mode=mode,
                               chunk_size=chunk, reduction="none")
    torch.testing.assert_close(crit(z, y, ref_features=r, ref_labels=ry), want, **TOL)


def test_ref_gradcheck_float64():
    z = F.normalize(torch.randn(4, 2, 3, dtype=torch.float64), dim=-1).requires_grad_()
    r = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1).requires_grad_()
    y, ry = torch.tensor([0, 1, 0, 2]), torch.tensor([1, 0, 0, 2, 1])
    assert torch.autograd.gradcheck(
        lambda a, b: supcon_loss(a, y, ref_features=b, ref_labels=ry, temperature=0.3, normalize=True,
                                 reduction="none"), (z, r))
    z2 = z[:, 0].detach().clone().requires_grad_()
    r2 = r[:4].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(  # the same-tensor exclusion, and the zero option on a batch with negatives
        lambda a, b: supcon_loss(a, y, ref_features=b, ref_labels=y, temperature=0.3, normalize=True,
                                 zero_if_no_negatives=True), (z2, r2))


def test_ref_empty_and_half_precision():
    z = F.normalize(torch.randn(4, 6), dim=-1)
    y = torch.tensor([0, 1, 0, 1])
    out = supcon_loss(z.requires_grad_(), y, ref_features=torch.zeros(0, 6), ref_labels=torch.zeros(0, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(z.grad).all()
    r = F.normalize(torch.randn(6, 6), dim=-1)
    ry = torch.tensor([0, 1, 2, 0, 1, 2])
    half = supcon_loss(z.detach().bfloat16(), y, ref_features=r.bfloat16(), ref_labels=ry)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, supcon_loss(z.detach().bfloat16().float(), y, ref_features=r.bfloat16().float(),
                                                 ref_labels=ry))


def test_ref_bad_inputs_name_the_argument():
    z = F.normalize(torch.randn(4, 2, 3), dim=-1)
    r = F.normalize(torch.randn(5, 3), dim=-1)
    y, ry = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 0, 1, 2])
    with pytest.raises(ValueError, match="ref_features and ref_labels must be given together"):
        supcon_loss(z, y, ref_labels=ry)
    with pytest.raises(ValueError, match="ref_features and ref_labels must be given together"):
        supcon_loss(z, y, ref_features=r)
    with pytest.raises(ValueError, match="ref_features and ref_labels must be given together"):
        ntxent_loss(z[:, 0], y, ref_labels=ry)
    with pytest.raises(ValueError, match="mask cannot be combined with ref_features"):
        supcon_loss(z, mask=torch.eye(4), ref_features=r, ref_labels=ry)
    with pytest.raises(ValueError, match="labels are required with ref_features"):
        supcon_loss(z, ref_features=r, ref_labels=ry)
    with pytest.raises(ValueError, match=r"ref_features must have shape \(M, 3\)"):
        supcon_loss(z, y, ref_features=F.normalize(torch.randn(5, 4), dim=-1), ref_labels=ry)
    with pytest.raises(ValueError, match="ref_features must be 2-D"):
        supcon_loss(z, y, ref_features=z, ref_labels=y)
    with pytest.raises(ValueError, match=r"ref_labels must have shape \(5,\)"):
        supcon_loss(z, y, ref_features=r, ref_labels=ry[:4])
    with pytest.raises(ValueError, match=r"ref_labels must have shape \(5,\)"):
        supcon_loss(z, y, ref_features=r, ref_labels=y)  # the same-tensor rule needs M == N
    with pytest.raises(TypeError, match="ref_labels must hold integer"):
        supcon_loss(z, y, ref_features=r, ref_labels=ry.float())
    with pytest.raises(ValueError, match="ref_features must be L2-normalised"):
        supcon_loss(z, y, ref_features=r * 3, ref_labels=ry)
    torch.testing.assert_close(supcon_loss(z, y, ref_features=r * 3, ref_labels=ry, normalize=True),
                               supcon_loss(z, y, ref_features=r, ref_labels=ry))


# ------------------------------------------------------------------ zero_if_no_negatives


def _no_negative_batches():
    z1 = F.normalize(torch.randn(5, 2, 4, dtype=torch.float64), dim=-1)
    same = torch.zeros(5, dtype=torch.long)
    yield "labels", z1, dict(labels=same)
    yield "simclr_one_sample", z1[:1], dict()
    yield "mask_all_ones", z1, dict(mask=torch.ones(5, 5, dtype=torch.float64))
    r = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    yield "ref", z1, dict(labels=same + 2, ref_features=r, ref_labels=torch.full((3,), 2))


@pytest.mark.parametrize("case", [c[0] for c in _no_negative_batches()])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_zero_if_no_negatives_supcon(case, mode):
    _, z, kw = next(c for c in _no_negative_batches() if c[0] == case)
    z = z.clone().requires_grad_()
    plain = supcon_loss(z, contrast_mode=mode, reduction="none", **kw)
    if case != "simclr_one_sample":
        assert (plain > 0).all()  # SupContrast scores it; PML returns 0
    out = supcon_loss(z, contrast_mode=mode, reduction="none", zero_if_no_negatives=True, **kw)
    assert torch.equal(out, torch.zeros_like(out)) and out.grad_fn is not None
    out.sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_zero_if_no_negatives_changes_nothing_when_a_negative_exists():
    z = F.normalize(torch.randn(6, 2, 4, dtype=torch.float64), dim=-1)
    y = torch.tensor([0, 0, 0, 0, 0, 1])  # one negative class is enough
    r = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    mask = torch.ones(6, 6, dtype=torch.float64)
    mask[0, 3] = 0.0  # a single zero-weight column: anchor 0 has negatives (views of sample 3)
    for kw in (dict(labels=y), dict(), dict(mask=mask), dict(labels=y * 0, ref_features=r, ref_labels=torch.tensor([0, 0, 1])),
               dict(labels=y, ref_features=r, ref_labels=torch.zeros(3, dtype=torch.long))):
        a = supcon_loss(z, reduction="none", **kw)
        b = supcon_loss(z, reduction="none", zero_if_no_negatives=True, **kw)
        assert torch.equal(a, b) and (a > 0).any()
    mask_self = torch.ones(6, 6, dtype=torch.float64)
    mask_self[2, 2] = 0.0  # zero self weight: the anchor's other view is a negative (V=2) ...
    assert supcon_loss(z, mask=mask_self, zero_if_no_negatives=True) > 0
    # ... but with V=1 the only zero-weight column is the anchor itself: no negative
    assert supcon_loss(z[:, 0], mask=mask_self, zero_if_no_negatives=True) == 0


def test_zero_if_no_negatives_keeps_nan_visible():
    z = torch.full((3, 4), float("nan"), dtype=torch.float64)
    out = supcon_loss(z, torch.zeros(3, dtype=torch.long), normalize=True, zero_if_no_negatives=True)
    assert torch.isnan(out)


def test_modules_carry_the_option():
    z = F.normalize(torch.randn(4, 2, 3), dim=-1)
    y = torch.zeros(4, dtype=torch.long)
    crit = tailwise.build_loss("supcon", zero_if_no_negatives=True)
    assert crit(z, y).item() == 0.0 and "zero_if_no_negatives=True" in repr(crit)
    assert tailwise.SupConLoss()(z, y).item() > 0
    assert tailwise.build_loss("ntxent", zero_if_no_negatives=True)(z[:, 0], y).item() == 0.0
    sd = crit.state_dict()
    assert tailwise.SupConLoss(zero_if_no_negatives=True).load_state_dict(sd) is not None


def _device_path_calls(device="cpu"):
    g = torch.Generator().manual_seed(3)
    z = F.normalize(torch.randn(6, 2, 4, generator=g), dim=-1).to(device)
    r = F.normalize(torch.randn(5, 4, generator=g), dim=-1).to(device)
    y, ry = torch.tensor([0, 0, 1, 1, 2, 2], device=device), torch.tensor([0, 1, 2, 2, 1], device=device)
    same = torch.zeros(6, dtype=torch.long, device=device)
    ones = torch.ones(6, 6, device=device)
    z1 = z[:, 0].contiguous()
    return [
        ("supcon_labels", lambda a: supcon_loss(a, y, zero_if_no_negatives=True), z),
        ("supcon_no_negatives", lambda a: supcon_loss(a, same, zero_if_no_negatives=True), z),
        ("supcon_simclr", lambda a: supcon_loss(a, zero_if_no_negatives=True), z),
        ("supcon_mask", lambda a: supcon_loss(a, mask=ones, zero_if_no_negatives=True), z),
        ("supcon_ref", lambda a: supcon_loss(a, y, ref_features=r, ref_labels=ry, zero_if_no_negatives=True), z),
        ("supcon_ref_self", lambda a: supcon_loss(a, y, ref_features=z1, ref_labels=y, zero_if_no_negatives=True), z),
        ("ntxent", lambda a: ntxent_loss(a, y, zero_if_no_negatives=True), z1),
        ("ntxent_no_negatives", lambda a: ntxent_loss(a, same, zero_if_no_negatives=True), z1),
        ("ntxent_ref", lambda a: ntxent_loss(a, y, ref_features=r, ref_labels=ry, zero_if_no_negatives=True), z1),
    ]


@pytest.mark.parametrize("name", [c[0] for c in _device_path_calls()])
def test_no_host_to_device_copies_per_call(name):
    """On ``meta`` (an accelerator stand-in): forward and backward copy no host data to the device."""
    _, fn, x = next(c for c in _device_path_calls("meta") if c[0] == name)
    fn(x)  # warm-up
    a = x.clone().requires_grad_()
    with _refuse_host_to_device():
        fn(a).backward()
    assert a.grad is not None and a.grad.device.type == "meta"


@pytest.mark.parametrize("name", [c[0] for c in _device_path_calls()])
def test_device_paths_read_nothing_on_the_host(name):
    """The accelerator paths on CPU: same value and gradient as eager CPU, no host read of values."""
    _, fn, x = next(c for c in _device_path_calls() if c[0] == name)
    a = x.clone().requires_grad_()
    want = fn(a)
    want.backward()
    b = x.clone().requires_grad_()
    with _device_paths():
        fn(x)  # warm-up (per-device caches)
        with _no_host_reads():
            got = fn(b)
            got.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b.grad, a.grad)


def test_compile_fullgraph_with_ref_and_option():
    z = F.normalize(torch.randn(6, 2, 4), dim=-1)
    r = F.normalize(torch.randn(6, 4), dim=-1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])

    def fn(a, b, la, lb):
        return supcon_loss(a, la, ref_features=b, ref_labels=lb, zero_if_no_negatives=True)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for lb in (y.flip(0), y):  # the same label tensor (row i excluded) traces its own graph
        torch.testing.assert_close(compiled(z, r, y, lb), fn(z, r, y, lb))
    assert not torch.isclose(fn(z, r, y, y), fn(z, r, y, y.clone()))
