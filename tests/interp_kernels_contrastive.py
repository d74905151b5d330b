"""The Triton contrastive kernel (op ``contrastive_rows``) against the torch path, in Triton's interpreter.

Not collected by a plain ``pytest tests`` (no ``test_`` prefix): ``TRITON_INTERPRET=1`` must be set
before Triton is imported, so ``tests/test_kernels_contrastive.py`` runs this file in a fresh
process with it set (by hand: ``TRITON_INTERPRET=1 pytest tests/interp_kernels_contrastive.py``).

Tiny CPU tensors with odd sizes (partial tiles in every dimension: the interpreter's tiles are
16 x 16 x 16), value and gradient, for the op and for every loss routed through it.
"""

import inspect
import os

import pytest
import torch
import torch.nn.functional as F

from dist_harness import run_distributed, shard
from tailwise.functional import (bcl_loss, dcl_loss, dclw_loss, info_nce_loss, paco_loss, rescom_loss,
                                 supcon_loss, tsc_loss)
from tailwise.kernels import backend
from tailwise.kernels.contrastive_lse import contrastive_rows

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs TRITON_INTERPRET=1 before triton is imported")


VALUE_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)


def _unit(*shape, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1).to(dtype)


def _run(fn, inputs, kernel):
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    with backend(kernel):
        out = fn(*leaves)
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    # a random linear functional of every output, so each output's gradient path is exercised
    g = torch.Generator().manual_seed(1)
    total = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs if o.requires_grad)
    total.backward()
    return [o.detach() for o in outs], [x.grad for x in leaves if x.requires_grad]


LAUNCHES = {"fwd": 0, "bwd": 0}


@pytest.fixture(autouse=True)
def _count_launches(monkeypatch):
    """Count the Triton forward/backward launches, so a silent torch fallback cannot pass a test."""
    from tailwise.kernels import _contrastive_triton as kt
    fwd, bwd = kt._forward, kt._backward

    def counted(name, impl):
        def run(*args):
            LAUNCHES[name] += 1
            return impl(*args)
        return run

    monkeypatch.setattr(kt, "_forward", counted("fwd", fwd))
    monkeypatch.setattr(kt, "_backward", counted("bwd", bwd))


def _compare(fn, *inputs, value=VALUE_TOL, grad=GRAD_TOL):
    ref_out, ref_grad = _run(fn, inputs, "torch")
    before = dict(LAUNCHES)
    out, grads = _run(fn, inputs, "triton")
    assert LAUNCHES["fwd"] > before["fwd"] and LAUNCHES["bwd"] > before["bwd"], "the Triton kernels did not run"
    assert len(out) == len(ref_out)
    for o, r in zip(out, ref_out):
        torch.testing.assert_close(o.float(), r.float(), **value)
    for g, r in zip(grads, ref_grad):
        assert g is not None and r is not None
        torch.testing.assert_close(g.float(), r.float(), **grad)
    return ref_out


# ---------------------------------------------------------------------------------------- the op


@pytest.mark.parametrize("m,l,d", [(13, 21, 7), (17, 5, 33), (1, 40, 16), (31, 31, 3)])
def test_rows_lse_only(m, l, d):
    _compare(lambda a, c: contrastive_rows(a, c, 3.0), _unit(m, d), _unit(l, d))


@pytest.mark.parametrize("ks", [1, 2])
def test_rows_labels_self_and_positives(ks):
    m, l, d = 13, 21, 7
    self_idx = torch.randint(0, l, (m,)) if ks == 1 else torch.stack([torch.arange(m), torch.arange(m) + 3], 1)
    a_lab, c_lab = torch.randint(0, 3, (m,)), torch.randint(0, 3, (l,))
    _compare(lambda a, c: contrastive_rows(a, c, 1 / 0.07, self_idx=self_idx, a_lab=a_lab, c_lab=c_lab,
                                           positives=True), _unit(m, d), _unit(l, d))


@pytest.mark.parametrize("symmetric", [False, True])
def test_rows_labels_beyond_int32_and_absent_from_the_contrast_set(symmetric):
    # the kernel compares int32 ids: labels that only differ above bit 32 must stay different, and an
    # anchor label no contrast row has must match nothing (not the id of some other class)
    m, l, d = 13, 13 if symmetric else 21, 7
    big = torch.tensor([0, 1 << 32, (1 << 40) + 5, -(1 << 33), 7])
    c_lab = big[torch.randint(0, 4, (l,))]
    a_lab = c_lab if symmetric else big[torch.randint(0, 5, (m,))]
    if not symmetric:
        a_lab[0] = 7  # in neither the contrast labels nor their sorted positions
    self_idx = torch.arange(m) if symmetric else None

    def fn(a, c=None):
        return contrastive_rows(a, a if c is None else c, 1 / 0.07, self_idx=self_idx, a_lab=a_lab, c_lab=c_lab,
                                positives=True, symmetric=symmetric)

    _compare(fn, *((_unit(m, d),) if symmetric else (_unit(m, d), _unit(l, d))))
    from tailwise.kernels._contrastive_triton import _label_ids
    ia, ic = _label_ids(a_lab, c_lab, symmetric)
    assert ia.dtype == ic.dtype == torch.int32
    assert torch.equal(ia[:, None] == ic[None, :], a_lab[:, None] == c_lab[None, :])


def test_rows_biases_and_positive_weights():
    m, l, d = 11, 19, 9
    a_lab, c_lab = torch.randint(0, 4, (m,)), torch.randint(0, 4, (l,))
    col_bias, same_bias, pos_w = torch.randn(l), torch.rand(l), torch.rand(l) + 0.5
    _compare(lambda a, c: contrastive_rows(a, c, 5.0, self_idx=torch.arange(m), a_lab=a_lab, c_lab=c_lab,
                                           col_bias=col_bias, same_bias=same_bias, pos_weight=pos_w,
                                           positives=True), _unit(m, d), _unit(l, d))


@pytest.mark.parametrize("extras", [False, True])
def test_rows_symmetric_single_pass_backward(extras):
    n, d = 19, 7
    lab = torch.randint(0, 3, (n,))
    kw = dict(col_bias=torch.randn(n), same_bias=torch.rand(n), pos_weight=torch.rand(n)) if extras else {}
    _compare(lambda x: contrastive_rows(x, x, 4.0, self_idx=torch.arange(n), a_lab=lab, c_lab=lab, positives=True,
                                        symmetric=True, **kw), _unit(n, d))


def test_rows_symmetric_matches_general_kernel():
    # the one-pass backward (G + G^T) X equals the two-pass dA + dC on the same tensor
    n, d = 18, 5
    lab = torch.randint(0, 4, (n,))
    x = _unit(n, d)
    outs = []
    for sym in (False, True):
        _, (g,) = _run(lambda x: contrastive_rows(x, x, 2.0, self_idx=torch.arange(n), a_lab=lab, c_lab=lab,
                                                  positives=True, symmetric=sym), [x], "triton")
        outs.append(g)
    torch.testing.assert_close(outs[0], outs[1], **GRAD_TOL)


def test_rows_empty_rows_and_masked_everything():
    # every column excluded for row 0 (l = 2, two excluded columns): lse -inf, no NaN in the grads
    a, c = _unit(3, 4), _unit(2, 4)
    self_idx = torch.tensor([[0, 1], [0, -1], [-1, -1]])
    ref_out, _ = _run(lambda a, c: contrastive_rows(a, c, 2.0, self_idx=self_idx), [a, c], "torch")
    out, grads = _run(lambda a, c: (contrastive_rows(a, c, 2.0, self_idx=self_idx)[0][1:],), [a, c], "triton")
    assert torch.isneginf(ref_out[0][0])
    with backend("triton"):
        lse = contrastive_rows(a, c, 2.0, self_idx=self_idx)[0]
    assert torch.isneginf(lse[0])
    torch.testing.assert_close(lse[1:], ref_out[0][1:], **VALUE_TOL)
    assert all(torch.isfinite(g).all() for g in grads)


def test_rows_nan_features_propagate():
    a, c = _unit(5, 4), _unit(6, 4)
    c[2, 1] = float("nan")
    with backend("triton"):
        lse, _, _ = contrastive_rows(a, c, 2.0)
    assert torch.isnan(lse).all()


def test_rows_empty_inputs_follow_the_torch_path():
    for m, l in [(0, 5), (4, 0)]:
        a, c = _unit(m, 3).requires_grad_(), _unit(l, 3)
        with backend("triton"):
            lse, _, _ = contrastive_rows(a, c, 2.0)
        assert lse.shape == (m,)
        assert (lse == float("-inf")).all()


def test_rows_float16_features_run_in_half():
    from tailwise.kernels.contrastive_lse import keeps_feature_dtype

    @keeps_feature_dtype
    def f(x, c):
        return contrastive_rows(x.float(), c.float(), 3.0)

    x, c = _unit(13, 7, dtype=torch.float16), _unit(9, 7, dtype=torch.float16)
    ref, _ = _run(f, [x, c], "torch")
    out, grads = _run(f, [x, c], "triton")
    torch.testing.assert_close(out[0], ref[0], rtol=1e-3, atol=1e-3)
    assert all(g.dtype == torch.float16 and torch.isfinite(g).all() for g in grads)


# -------------------------------------------------------------------------------------- the losses


@pytest.mark.parametrize("v", [1, 2, 3])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_labels(v, mode):
    n = 13
    y = torch.randint(0, 4, (n,))
    _compare(lambda z: supcon_loss(z, y, contrast_mode=mode, temperature=0.1), _unit(n, v, 7))


@pytest.mark.parametrize("mode", ["all", "one"])
def test_simclr_nt_xent_without_labels(mode):
    _compare(lambda z: supcon_loss(z, contrast_mode=mode, temperature=0.5), _unit(11, 2, 9))


def test_supcon_sample_weights_reduction_none_and_base_temperature():
    n = 13
    y = torch.randint(0, 3, (n,))
    w = torch.rand(n)
    # per-sample weights are `weight` or, after the convention change, `sample_weight`
    name = "sample_weight" if "sample_weight" in inspect.signature(supcon_loss).parameters else "weight"
    _compare(lambda z: supcon_loss(z, y, base_temperature=0.2, **{name: w}), _unit(n, 2, 7))
    _compare(lambda z: supcon_loss(z, y, reduction="none"), _unit(n, 2, 7))


def test_supcon_explicit_mask():
    # the (N, N) mask gives the positives (torch); the kernel gives the logsumexp
    n = 10
    mask = (torch.rand(n, n) > 0.6).float()
    _compare(lambda z: supcon_loss(z, mask=mask), _unit(n, 2, 6))


def test_supcon_anchor_without_positives_is_zero_not_nan():
    y = torch.arange(7)  # V = 1: nobody has a positive
    ref = _compare(lambda z: supcon_loss(z, y), _unit(7, 1, 5))
    assert ref[0].item() == 0.0


@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_reference_set(mode):
    # local anchors against a separate labelled set: the general (non-symmetric) kernel, no excluded column
    n, m = 11, 19
    y, ry = torch.randint(0, 4, (n,)), torch.randint(0, 5, (m,))
    _compare(lambda z, r: supcon_loss(z, y, ref_features=r, ref_labels=ry, contrast_mode=mode, temperature=0.1),
             _unit(n, 2, 7), _unit(m, 7))


def test_supcon_reference_set_same_label_tensor_excludes_row_i():
    n = 13
    y = torch.randint(0, 3, (n,))
    _compare(lambda z, r: supcon_loss(z, y, ref_features=r, ref_labels=y, temperature=0.2, zero_if_no_negatives=True),
             _unit(n, 2, 6), _unit(n, 6))


def test_supcon_zero_if_no_negatives_through_the_kernel():
    y = torch.zeros(9, dtype=torch.long)
    ref = _compare(lambda z: supcon_loss(z, y, zero_if_no_negatives=True), _unit(9, 2, 5))
    assert ref[0].item() == 0.0


def test_info_nce_nt_xent_and_queue():
    _compare(lambda z: info_nce_loss(z, temperature=0.2), _unit(9, 2, 7))
    queue = _unit(23, 7)
    _compare(lambda z: info_nce_loss(z, queue, temperature=0.2), _unit(9, 2, 7))


def test_dcl_and_dclw():
    _compare(lambda z: dcl_loss(z), _unit(12, 2, 7))
    _compare(lambda z: dclw_loss(z), _unit(12, 2, 7))


def test_paco_with_queue():
    n, c = 10, 3
    y = torch.randint(0, c, (n,))
    sup = torch.randn(n, c)
    _compare(lambda z, s: paco_loss(z, y, s, class_counts=[5, 3, 1], alpha=0.3), _unit(n, 2, 7), sup)
    qk, ql = _unit(6, 7), torch.randint(0, c, (6,))
    _compare(lambda z, s: paco_loss(z, y, s, queue=qk, queue_labels=ql), _unit(n, 2, 7), sup)


def test_bcl():
    n, c = 11, 4
    y = torch.randint(0, c, (n,))
    _compare(lambda z, cen: bcl_loss(z, y, cen), _unit(n, 2, 7), _unit(c, 7))


def test_tsc():
    n, c = 9, 3
    y = torch.randint(0, c, (n,))
    targets = _unit(5, 7)
    _compare(lambda z: tsc_loss(z, y, targets, torch.tensor([4, 0, 2]), target_weight=0.5), _unit(n, 2, 7))


def test_rescom_with_queue():
    n, c = 10, 3
    y = torch.randint(0, c, (n,))
    qk, ql = _unit(12, 7), torch.randint(0, c, (12,))
    _compare(lambda z: rescom_loss(z, y, qk, ql, class_counts=[4, 2, 1], num_positives=2, num_negatives=3),
             _unit(n, 2, 7))


# --------------------------------------------------------------------------- gather_distributed


def _dist_worker(rank, world, feats, labels):
    os.environ["TRITON_INTERPRET"] = "1"
    z = shard(feats, rank, world).clone().requires_grad_()
    y = shard(labels, rank, world)
    out = {}
    for kernel in ("torch", "triton"):
        z.grad = None
        with backend(kernel):
            loss = supcon_loss(z, y, temperature=0.2, gather_distributed=True)
            loss = loss + info_nce_loss(z, temperature=0.3, gather_distributed=True)
            loss = loss + dcl_loss(z, gather_distributed=True)
        loss.backward()
        out[kernel] = (loss.detach(), z.grad.clone())
    return out


@pytest.mark.distributed
def test_gathered_kernel_equals_torch_path_on_two_ranks():
    # local anchors against the gathered contrast set: the general (two-pass) backward
    n = 9  # shards of 5 and 4 rows
    feats = _unit(n, 2, 6)
    labels = torch.randint(0, 3, (n,))
    res = run_distributed(_dist_worker, 2, feats, labels)
    for r in res:
        torch.testing.assert_close(r["triton"][0], r["torch"][0], **VALUE_TOL)
        torch.testing.assert_close(r["triton"][1], r["torch"][1], **GRAD_TOL)


def test_triton_path_traces_fullgraph_through_the_custom_ops():
    # dynamo + AOT autograd see the kernels as opaque custom ops (fake shapes, registered backward)
    n = 9
    y = torch.randint(0, 3, (n,))
    z = _unit(n, 2, 7)
    fn = lambda z: supcon_loss(z, y, normalize=True)  # noqa: E731
    ref_leaf = z.clone().requires_grad_()
    ref = fn(ref_leaf)
    ref.backward()
    torch._dynamo.reset()
    leaf = z.clone().requires_grad_()
    with backend("triton"):
        fn(z)  # resolve the dispatcher's lazy Triton import eagerly (tracing it is the dispatcher's concern)
        out = torch.compile(fn, fullgraph=True, backend="aot_eager")(leaf)
    out.backward()
    torch.testing.assert_close(out.detach(), ref.detach(), **VALUE_TOL)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, **GRAD_TOL)


def test_masked_queues_equal_their_selected_rows():
    # the fixed-shape queue forms (unused rows: -inf column bias, never a positive) on the kernel
    n, c, k, d = 9, 3, 11, 7
    z = _unit(n, 2, d)
    qk, ql = _unit(k, d), torch.randint(0, c, (k,))
    used = torch.rand(k) > 0.4
    _compare(lambda z: info_nce_loss(z, qk, queue_mask=used, temperature=0.2), z)
    y, sup = torch.randint(0, c, (n,)), torch.randn(n, c)
    out = _compare(lambda z, s: paco_loss(z, y, s, queue=qk, queue_labels=ql, queue_mask=used, alpha=0.3), z, sup)
    with backend("torch"):
        ref = paco_loss(z, y, sup, queue=qk[used], queue_labels=ql[used], alpha=0.3)
    torch.testing.assert_close(out[0], ref, **VALUE_TOL)
