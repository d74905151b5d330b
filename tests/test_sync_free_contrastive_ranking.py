"""Contrastive and ranking families without host synchronisation.

On accelerators and while ``torch.compile`` traces, these losses replace data-dependent selection
(``unique``, ``nonzero``, boolean-mask indexing, ``.item()``) by masks over fixed shapes. The
masked form is forced on CPU here (``masked_paths``) and must give the selection form's values and
gradients; the fill-masked ``MemoryQueue`` must hold what a plain ring buffer holds; value checks
become device-side asserts while tracing; and every loss traces with ``fullgraph=True``.
"""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF
from tailwise import MemoryQueue
from tailwise.contrastive._common import class_counts_on, masked_paths
from tailwise.kernels.soft_rank import _SoftRank, soft_rank_torch


def unit(*shape, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def _run(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.sum().backward()
    return out.detach(), x.grad


def _same_both_ways(fn, x, atol=1e-10):
    a = _run(fn, x)
    with masked_paths():
        b = _run(fn, x)
    torch.testing.assert_close(b[0], a[0], rtol=0, atol=atol)
    torch.testing.assert_close(b[1], a[1], rtol=0, atol=atol)


# ----------------------------------------------------------------------------- ranking
def _ranking_case(kind, n, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "binary":
        x = torch.randn(n, generator=g, dtype=torch.float64)
        y = (torch.rand(n, generator=g) < 0.3).long()
        qs, ql = torch.randn(13, generator=g, dtype=torch.float64), (torch.rand(13, generator=g) < 0.3).long()
    elif kind == "index":
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (n,), generator=g)
        qs, ql = torch.randn(13, 3, generator=g, dtype=torch.float64), (torch.rand(13, 3, generator=g) < 0.3).long()
    else:
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = (torch.rand(n, 3, generator=g) < 0.3).long()
        qs, ql = torch.randn(13, 3, generator=g, dtype=torch.float64), (torch.rand(13, 3, generator=g) < 0.3).long()
    if n > 5:
        y[3] = -100          # ignored rows stay in place (masked) instead of being dropped
        if kind == "multi":
            y[5, 1] = -100
    w = torch.rand(n, generator=g, dtype=torch.float64)
    return x, y, w, qs, ql


RANKING = [
    (TF.smooth_ap_loss, dict(temperature=0.05)),
    (TF.recall_at_quantile_loss, dict(quantile=0.7)),
    (TF.recall_at_quantile_loss, dict(quantile=0.7, interpolation="nearest", detach_threshold=False)),
    (TF.recall_at_quantile_loss, dict(quantile=0.35, interpolation="lower")),
    (TF.recall_at_quantile_loss, dict(quantile=0.35, interpolation="higher")),
    (TF.recall_at_quantile_loss, dict(quantile=0.5, interpolation="midpoint")),
    (TF.pauc_at_budget_loss, dict(beta=0.3)),
    (TF.pauc_at_budget_loss, dict(alpha=0.1, beta=0.45, surrogate="squared_hinge")),
]


@pytest.mark.parametrize("fn,kw", RANKING)
@pytest.mark.parametrize("kind", ["binary", "index", "multi"])
def test_ranking_masked_form_matches_selection(fn, kw, kind):
    warnings.simplefilter("ignore")
    for n, seed in ((40, 0), (7, 1), (0, 2)):
        x, y, w, qs, ql = _ranking_case(kind, n, seed)
        for reduction in ("mean", "none"):
            _same_both_ways(lambda u: fn(u, y, reduction=reduction, **kw), x)
        _same_both_ways(lambda u: fn(u, y, sample_weight=w, queue_scores=qs, queue_labels=ql, **kw), x)


@pytest.mark.parametrize("cls,kw", [(tailwise.SmoothAPLoss, {}), (tailwise.RecallAtQuantileLoss, dict(quantile=0.8)),
                                    (tailwise.PAUCAtBudgetLoss, dict(beta=0.3))])
def test_ranking_modules_masked_queue_matches_selection(cls, kw):
    """Five steps: same losses, gradients and queue contents (ignored rows are not enqueued)."""
    warnings.simplefilter("ignore")
    a = cls(num_classes=3, queue_size=16, **kw)
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(7, 3, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (7,), generator=g)
        y[1] = -100
        la, ga = _run(lambda u: a(u, y), x)
        with masked_paths():
            lb, gb = _run(lambda u: b(u, y), x)
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-10)
        torch.testing.assert_close(gb, ga, rtol=0, atol=1e-10)
        for buf in ("queue", "filled", "ptr"):
            assert torch.equal(getattr(a.queue, buf), getattr(b.queue, buf)), buf


def test_soft_rank_op_forms_agree_and_gradcheck():
    assert tailwise.kernels.list_ops()["soft_rank"]["losses"] == ["smooth_ap", "pauc_at_budget"]
    x = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, 9, 3, dtype=torch.float64) < 0.6).double()
    # weighted form with 0/1 column weights == the selection form on the selected columns
    r = soft_rank_torch(x, a, 0.3, w)
    for b in range(2):
        for k in range(3):
            sel = w[b, :, k].bool()
            torch.testing.assert_close(r[b, :, k], _SoftRank.apply(x[b][sel], a[b], 0.3))
    assert torch.autograd.gradcheck(lambda u, v: soft_rank_torch(u, v, 0.4, w), (x, a))
    assert torch.autograd.gradcheck(lambda u: soft_rank_torch(u, None, 0.4, w), (x,))
    # a = None is x ranked against itself; the gradient reaches x through both roles
    torch.testing.assert_close(soft_rank_torch(x, None, 0.4, w), soft_rank_torch(x, x, 0.4, w))


def test_soft_rank_chunks(monkeypatch):
    from tailwise.kernels import soft_rank as mod
    x = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 11, 2, dtype=torch.float64)
    want = _run(lambda u: soft_rank_torch(u, None, 0.2, w), x)
    monkeypatch.setitem(mod._BLOCK_ELEMENTS, "cpu", 40)  # one anchor row per block
    got = _run(lambda u: soft_rank_torch(u, None, 0.2, w), x)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_warmup_blend_weights_from_the_buffer():
    a, b = tailwise.SmoothAPLoss(temperature=0.2), tailwise.PAUCAtBudgetLoss(beta=0.3)
    blend = tailwise.WarmupBlend(a, b, warmup_steps=1, blend_steps=3)
    x, y = torch.randn(12, 3), torch.randint(0, 3, (12,))
    for _ in range(2):
        blend.step()
    lam = blend.blend_weight
    assert lam == pytest.approx(1 / 3)
    torch.testing.assert_close(blend(x, y), (1.0 - lam) * a(x, y) + lam * b(x, y), rtol=0, atol=0)
    other = tailwise.WarmupBlend(a, b, warmup_steps=1, blend_steps=3)
    other.load_state_dict(blend.state_dict())  # the host mirror of step_count follows the load
    assert other.blend_weight == lam and "step=2" in repr(other)


# ----------------------------------------------------------------------------- contrastive
Y3 = torch.tensor([0, 1, 2, 0, 1, 1, 2, 2])


def _contrastive_cases():
    g = torch.Generator().manual_seed(3)
    cen = F.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64), dim=-1)
    targets = F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1)
    qk = F.normalize(torch.randn(9, 8, generator=g, dtype=torch.float64), dim=-1)
    ql = torch.randint(0, 3, (9,), generator=g)
    y = torch.tensor([0, 1, 7, 0, 1, 1, 5, 5])  # arbitrary label values for SupCon
    return {
        "supcon": lambda z: TF.supcon_loss(z, y, chunk_size=5),
        "supcon_one": lambda z: TF.supcon_loss(z, y, contrast_mode="one"),
        "simclr": lambda z: TF.supcon_loss(z),
        "bcl": lambda z: TF.bcl_loss(z, Y3, cen),
        "paco": lambda z: TF.paco_loss(z, Y3, z[:, 0, :3] * 2, class_counts=[10, 5, 1], queue=qk, queue_labels=ql),
        "rescom": lambda z: TF.rescom_loss(z, Y3, qk, ql, class_counts=[10, 5, 1], num_positives=2, num_negatives=3),
        "tsc": lambda z: TF.tsc_loss(z, Y3, targets, torch.tensor([2, 0, 1])),
    }


@pytest.mark.parametrize("name", sorted(_contrastive_cases()))
def test_contrastive_masked_form_matches_selection(name):
    fn = _contrastive_cases()[name]
    _same_both_ways(fn, unit(8, 2, 8))


def test_queue_mask_equals_selected_rows():
    z = unit(8, 2, 8)
    qk, ql = unit(9, 8), torch.randint(0, 3, (9,))
    qm = torch.tensor([True, False, True, True, False, False, True, True, False])
    torch.testing.assert_close(TF.info_nce_loss(z, qk, queue_mask=qm), TF.info_nce_loss(z, qk[qm]))
    torch.testing.assert_close(TF.paco_loss(z, Y3, z[:, 0, :3], queue=qk, queue_labels=ql, queue_mask=qm),
                               TF.paco_loss(z, Y3, z[:, 0, :3], queue=qk[qm], queue_labels=ql[qm]))
    kw = dict(num_positives=2, num_negatives=3)
    torch.testing.assert_close(TF.rescom_loss(z, Y3, qk, ql, queue_mask=qm, **kw),
                               TF.rescom_loss(z, Y3, qk[qm], ql[qm], **kw))
    # nothing valid: the queue terms vanish, gradients stay finite
    zz = z.clone().requires_grad_()
    none = torch.zeros(9, dtype=torch.bool)
    out = TF.rescom_loss(zz, Y3, qk, ql, queue_mask=none, **kw) + TF.info_nce_loss(zz, qk, queue_mask=none)
    out.backward()
    assert torch.isfinite(zz.grad).all()
    torch.testing.assert_close(TF.rescom_loss(z, Y3, qk, ql, queue_mask=none, **kw), TF.rescom_loss(z, Y3))


def test_contrastive_modules_masked_queue_matches_selection():
    a = tailwise.ResComLoss(num_classes=3, dim=8, queue_size_per_class=2, class_counts=[10, 5, 1],
                            num_positives=1, num_negatives=2).double()
    b = copy.deepcopy(a)
    for _ in range(4):
        z = unit(8, 2, 8)
        la, ga = _run(lambda u: a(u, Y3), z)
        with masked_paths():
            lb, gb = _run(lambda u: b(u, Y3), z)
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-12)
        torch.testing.assert_close(gb, ga, rtol=0, atol=1e-12)
        assert torch.equal(a.queue.queue, b.queue.queue) and torch.equal(a.queue.ptr, b.queue.ptr)
    z = unit(8, 2, 8)
    qb = MemoryQueue(4, 8, num_classes=3, balanced=True, dtype=torch.float64)
    qb.enqueue(unit(5, 8), torch.tensor([0, 0, 1, 0, 0]))
    qi = MemoryQueue(6, 8, dtype=torch.float64)
    qi.enqueue(unit(4, 8))
    paco = tailwise.PaCoLoss(num_classes=3, in_features=8).double()
    for fn in (lambda u: paco(u, Y3, queue=qb), lambda u: tailwise.InfoNCELoss()(u, qi)):
        _same_both_ways(fn, z, atol=1e-12)
    cp2 = tailwise.CP2Loss(queue_size=6, dim=8).double().eval()
    cp2.queue.enqueue(unit(4, 8))
    k, m = torch.randn(2, 8, 3, 3, dtype=torch.float64), (torch.rand(2, 3, 3) > 0.3).double()
    _same_both_ways(lambda u: cp2(u, k, m, m), torch.randn(2, 8, 3, 3, dtype=torch.float64), atol=1e-12)
    cp2.queue.reset()  # empty queue: instance term 0 either way
    _same_both_ways(lambda u: cp2(u, k, m, m), torch.randn(2, 8, 3, 3, dtype=torch.float64), atol=1e-12)


def test_tsc_centroid_update_matches_per_class_loop():
    crit = tailwise.TSCLoss(num_classes=4, dim=8, targets=unit(4, 8).float(), momentum=0.7)
    before = crit.class_centroid.clone()
    feats = unit(6, 2, 8).float()
    labels = torch.tensor([0, 2, 2, 0, 0, 2])  # classes 1 and 3 absent: unchanged
    crit.update_centroids(feats, labels)
    f = F.normalize(feats, dim=-1).mean(1)
    want = before.clone()
    for c in (0, 2):
        mean = F.normalize(f[labels == c].mean(0), dim=0)
        want[c] = F.normalize(0.7 * before[c] + 0.3 * mean, dim=0)
    torch.testing.assert_close(crit.class_centroid, want)


def test_class_counts_converted_once_per_device():
    a = class_counts_on([10, 5, 1], 3, "cpu")
    assert a is class_counts_on((10, 5, 1), 3, "cpu") and a.dtype == torch.float64
    with pytest.raises(ValueError, match="class_counts must be positive"):
        class_counts_on(torch.tensor([3.0, 0.0]), 2, "cpu")


# ----------------------------------------------------------------------------- MemoryQueue
class _RefRing:
    """A plain per-row ring buffer (``size`` slots per class when balanced)."""

    def __init__(self, size, dim, num_classes=None):
        self.size, self.balanced = size, num_classes is not None
        rings = num_classes if self.balanced else 1
        self.q = torch.zeros(rings * size, dim, dtype=torch.float64)
        self.lab = torch.arange(rings).repeat_interleave(size) if self.balanced else torch.full((size,), -1)
        self.filled = torch.zeros(rings * size, dtype=torch.bool)
        self.ptr = [0] * rings

    def enqueue(self, keys, labels, mask):
        rows = [i for i in range(keys.shape[0]) if mask is None or mask[i]]
        rings = {}
        for i in rows:
            rings.setdefault(int(labels[i]) if self.balanced else 0, []).append(i)
        for c, idx in rings.items():
            idx = idx[-self.size:]  # only the newest `size` survive, written from the pointer on
            for j, i in enumerate(idx):
                slot = c * self.size + (self.ptr[c] + j) % self.size
                self.q[slot] = keys[i]
                if not self.balanced:
                    self.lab[slot] = -1 if labels is None else labels[i]
                self.filled[slot] = True
            self.ptr[c] = (self.ptr[c] + len(idx)) % self.size


@pytest.mark.parametrize("balanced", [False, True])
def test_memory_queue_enqueue_matches_a_plain_ring_buffer(balanced):
    g = torch.Generator().manual_seed(1)
    q = MemoryQueue(4, 2, num_classes=3 if balanced else None, balanced=balanced, dtype=torch.float64)
    ref = _RefRing(4, 2, 3 if balanced else None)
    for step in range(12):
        b = int(torch.randint(0, 9, (1,), generator=g))
        keys = torch.randn(b, 2, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 3, (b,), generator=g)
        mask = None if step % 3 == 0 else torch.rand(b, generator=g) < 0.6
        q.enqueue(keys, labels, mask=mask)
        ref.enqueue(keys, labels, mask)
        assert torch.equal(q.filled, ref.filled), step
        torch.testing.assert_close(q.queue[q.filled], ref.q[ref.filled], rtol=0, atol=0)
        assert torch.equal(q.queue_labels[q.filled], ref.lab[ref.filled])
        assert q.ptr.tolist() == (ref.ptr if balanced else ref.ptr[0])
        keys_m, labels_m, valid = q.masked()
        assert torch.equal(keys_m[valid], q.keys) and torch.equal(labels_m[valid], q.labels)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        q.enqueue(torch.ones(2, 2, dtype=torch.float64), torch.tensor([0, 1]), mask=torch.ones(2))
    q.reset()
    assert len(q) == 0 and q.ptr.abs().sum() == 0


# ----------------------------------------------------------------------------- torch.compile
def _compile(fn, *args, backend="aot_eager"):
    # aot_eager also traces the custom autograd Functions' backward, without code generation
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)(*args)


def test_value_checks_become_device_asserts_while_tracing():
    with pytest.raises(RuntimeError, match="must be L2-normalised"):
        _compile(lambda z: TF.supcon_loss(z), torch.randn(4, 2, 8), backend="eager")
    with pytest.raises(RuntimeError, match=r"labels must be class indices in \[0, 2\]"):
        _compile(lambda z: TF.bcl_loss(z, torch.tensor([0, 1, 2, 3]), unit(3, 8).float()), unit(4, 2, 8).float(),
                 backend="eager")
    with pytest.raises(RuntimeError, match="binary target"):
        _compile(lambda x: TF.smooth_ap_loss(x, torch.tensor([0, 1, 2, 0])), torch.randn(4), backend="eager")
    # eager CPU keeps the exact ValueError
    with pytest.raises(ValueError, match=r"got norms in"):
        TF.supcon_loss(torch.randn(4, 2, 8))


def _compile_cases():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(6, 2, 8, generator=g), dim=-1)
    y = torch.tensor([0, 1, 2, 0, 1, 1])
    x = torch.randn(12, 3, generator=g)
    t = torch.randint(0, 3, (12,), generator=g)
    t[0] = -100
    qi = MemoryQueue(8, 8)
    qi.enqueue(F.normalize(torch.randn(5, 8, generator=g), dim=-1))
    qb = MemoryQueue(2, 8, num_classes=3, balanced=True)
    qb.enqueue(F.normalize(torch.randn(4, 8, generator=g), dim=-1), torch.tensor([0, 0, 1, 0]))
    paco = tailwise.PaCoLoss(num_classes=3, in_features=8, class_counts=[10, 5, 1], seed=0)
    tsc = tailwise.TSCLoss(num_classes=3, dim=8, targets=torch.randn(3, 8, generator=g), reassign=False)
    blend = tailwise.WarmupBlend(tailwise.PAUCAtBudgetLoss(beta=0.3),
                                 tailwise.SmoothAPLoss(num_classes=3, queue_size=8), warmup_steps=0, blend_steps=4)
    blend.step()
    return {  # name: (function, input, stateful)
        "supcon_mask": (lambda u: TF.supcon_loss(u, mask=(y[:, None] == y[None]).float()), z, False),
        "info_nce_memory_queue": (lambda u: tailwise.InfoNCELoss()(u, qi), z, False),
        "paco_memory_queue": (lambda u: paco(u, y, queue=qb), z, False),
        "tsc_training_step": (lambda u: tsc(u, y), z, True),
        "smooth_ap_queue_args": (lambda u: TF.smooth_ap_loss(u, t, queue_scores=x[:5].detach(),
                                                             queue_labels=t[:5].clamp_min(0)), x, False),
        "warmup_blend_blending": (lambda u: blend(u, t), x, True),
    }


@pytest.mark.parametrize("name", sorted(_compile_cases()))
def test_fullgraph_compile_beyond_the_contract_suite(name):
    """Paths the registry contract suite does not take (queues passed in, blending, TSC steps)."""
    fn, inp, stateful = _compile_cases()[name]
    eager_fn, _, _ = _compile_cases()[name]  # a fresh copy of any state for the eager reference
    want = _run(eager_fn, inp)
    got = _run(lambda u: _compile(fn, u), inp)
    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)
    assert math.isfinite(float(got[0]))
