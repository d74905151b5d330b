"""Kernels of the classification losses: the Triton kernels (run by the Triton interpreter on tiny
CPU tensors) against the torch path on value and gradient, the forced-backend error, the fused
linear cross-entropy against the full-logits formulation, and the focal fixes of issue 15.

The interpreter must be switched on before Triton is imported, so the Triton comparisons run in
a subprocess (this test process may already have imported Triton without it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF
from tailwise.kernels import KernelBackendError, backend

HAS_TRITON = tailwise.kernels.triton_available()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def _run_interpreted(code: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    env.pop("TAILWISE_KERNELS", None)
    src = "import os\nassert os.environ['TRITON_INTERPRET'] == '1'\n" + textwrap.dedent(code)
    res = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


_COMPARE = """
import torch, tailwise
import tailwise.functional as TF
from tailwise.kernels import backend
from tailwise.classification.eqlv2 import eqlv2_loss, EQLv2Loss
from tailwise.classification.equalized_focal import equalized_focal_loss, EqualizedFocalLoss
from tailwise.classification.softmax_eql import softmax_eql_loss, SoftmaxEQLLoss
torch.manual_seed(0)
N, C = 13, 7                                   # odd sizes: every block is partly masked
z0 = torch.randn(N, C) * 3
y = torch.randint(0, C, (N,)); y2 = y.clone(); y2[::4] = -100
cnt = torch.randint(1, 100, (C,)).tolist()
z4 = torch.randn(3, C, 2, 3); y4 = torch.randint(0, C, (3, 2, 3)); y4[0, 0] = -100
t = (torch.rand(N, C) > 0.7).float()
cw = torch.rand(C) + 0.1
big = torch.randn(3, 9000); ybig = torch.tensor([5, 8999, 0])   # > 8192 classes: the looped kernel
cases = {
 "ce_ls_cw": (lambda z: TF.cross_entropy_loss(z, y2, label_smoothing=0.1, class_weight=cw), z0),
 "ce_nd": (lambda z: TF.cross_entropy_loss(z, y4, reduction="none"), z4),
 "ce_looped": (lambda z: TF.balanced_softmax_loss(z, ybig, list(range(1, 9001))), big),
 "focal": (lambda z: TF.focal_loss(z, y2, alpha=cw, gamma=2), z0),
 "focal_scalar_alpha": (lambda z: TF.focal_loss(z, y2, alpha=0.25, gamma=0.5), z0),
 "focal_nd": (lambda z: TF.focal_loss(z, y4, gamma=1.5, reduction="none"), z4),
 "logit_adjusted": (lambda z: TF.logit_adjusted_loss(z, y2, cnt, tau=0.7, label_smoothing=0.05), z0),
 "balanced_softmax": (lambda z: TF.balanced_softmax_loss(z, y, cnt, reduction="none"), z0),
 "cb_softmax": (lambda z: TF.class_balanced_loss(z, y2, cnt, loss_type="softmax"), z0),
 "cb_sigmoid": (lambda z: TF.class_balanced_loss(z, y, cnt, loss_type="sigmoid", reduction="none"), z0),
 "cb_focal": (lambda z: TF.class_balanced_loss(z, y, cnt, loss_type="focal", gamma=0.5), z0),
 "iif": (lambda z: TF.iif_loss(z, y2, cnt, variant="smooth"), z0),
 "difficulty": (lambda z: TF.difficulty_loss(z, y2, torch.rand(C), normalize_by_weight=True), z0),
 "sigmoid_focal": (lambda z: TF.sigmoid_focal_loss(z, t), z0),
 "sigmoid_focal_none": (lambda z: TF.sigmoid_focal_loss(z, t, reduction="none", gamma=1.5), z0),
 "sigmoid_focal_sum": (lambda z: TF.sigmoid_focal_loss(z, torch.rand(N, C), reduction="sum", alpha=-1), z0),
 "sigmoid_focal_w": (lambda z: TF.sigmoid_focal_loss(z, t, sample_weight=torch.rand(N, 1)), z0),
 "sigmoid_focal_module_idx": (lambda z: tailwise.SigmoidFocalLoss(gamma=1.5)(z, y), z0),
 "sigmoid_focal_int_target": (lambda z: TF.sigmoid_focal_loss(z, t.long(), reduction="sum"), z0),
 "bal_bce": (lambda z: TF.bal_bce_loss(z, y, cnt, label_smoothing=0.1, reduction="none"), z0),
 "bal_bce_soft": (lambda z: TF.bal_bce_loss(z, torch.rand(N, C), cnt, target_threshold=0.4), z0),
 "eqlv2": (lambda z: eqlv2_loss(z, y2, torch.rand(C), torch.rand(C)), z0),
 "eqlv2_none": (lambda z: eqlv2_loss(z, y, torch.rand(C), torch.rand(C), reduction="none"), z0),
 "efl": (lambda z: equalized_focal_loss(z, y2, torch.rand(C), torch.rand(C), reduction="none"), z0),
 "softmax_eql": (lambda z: softmax_eql_loss(z, y2, torch.rand(C)), z0),
}
def run(f, z, be):
    torch.manual_seed(5)
    z = z.clone().requires_grad_()
    with backend(be):
        l = f(z)
    go = torch.rand_like(l)
    g, = torch.autograd.grad((l * go).sum(), z)
    return l.detach(), g
for k, (f, z) in cases.items():
    a = run(f, z, "torch"); b = run(f, z, "triton")
    ev = ((a[0] - b[0]).abs().max() / a[0].abs().max().clamp_min(1e-30)).item()
    eg = ((a[1] - b[1]).abs().max() / a[1].abs().max()).item()
    print("CASE", k, ev, eg)
for name, mk in [("eqlv2_module", lambda: EQLv2Loss(C)), ("efl_module", lambda: EqualizedFocalLoss(C)),
                 ("softmax_eql_module", lambda: SoftmaxEQLLoss(C))]:
    res = []
    for be in ("torch", "triton"):
        M = mk(); out = []
        for it in range(3):
            z = (z0 + it).requires_grad_()
            with backend(be):
                l = M(z, y2)
            l.backward(); out.append((l.detach(), z.grad))
        res.append((out, M.pos_grad.clone(), M.neg_grad.clone()))
    ev = max(((a[0] - b[0]).abs().max() / a[0].abs().max()).item() for a, b in zip(res[0][0], res[1][0]))
    eg = max(((a[1] - b[1]).abs().max() / a[1].abs().max()).item() for a, b in zip(res[0][0], res[1][0]))
    print("CASE", name, ev, eg)
    print("STATS", name, bool(torch.equal(res[0][1], res[1][1]) and torch.equal(res[0][2], res[1][2])))
"""


@needs_triton
def test_triton_kernels_match_torch_path_on_value_and_gradient():
    out = _run_interpreted(_COMPARE)
    cases = [line.split() for line in out.splitlines() if line.startswith("CASE")]
    assert len(cases) == 28
    for _, name, ev, eg in cases:
        assert float(ev) <= 1e-5, (name, ev)
        assert float(eg) <= 1e-4, (name, eg)
    stats = [line.split() for line in out.splitlines() if line.startswith("STATS")]
    assert stats and all(s[2] == "True" for s in stats), stats  # EQL statistics bit for bit


@needs_triton
def test_triton_inplace_mode_half_inputs_and_empty_batch():
    out = _run_interpreted("""
    import torch, tailwise
    import tailwise.functional as TF
    from tailwise.kernels import backend, inplace_gradients
    torch.manual_seed(1)
    z = torch.randn(11, 5) * 2; y = torch.randint(0, 5, (11,)); y[3] = -100
    z1 = z.clone().requires_grad_()
    ref = TF.cross_entropy_loss(z1, y, label_smoothing=0.1); ref.backward()
    # in-place: the logits buffer holds the gradient after the forward
    z2 = z.clone().requires_grad_()
    buf = z2.clone()  # a non-leaf whose storage the kernel overwrites
    with backend("triton"), inplace_gradients():
        loss = TF.cross_entropy_loss(buf, y, label_smoothing=0.1)
    loss.backward()
    print("INPLACE", abs(loss.item() - ref.item()), (z2.grad - z1.grad).abs().max().item())
    # more classes than one block: the looped kernel's second sweep writes the gradient
    zb1 = (torch.randn(3, 9000) * 3).requires_grad_(); yb = torch.tensor([1, -100, 8999])
    refb = TF.focal_loss(zb1, yb, gamma=0.5); refb.backward()
    zb2 = zb1.detach().clone().requires_grad_()
    with backend("triton"), inplace_gradients():
        lb2 = TF.focal_loss(zb2.view_as(zb2), yb, gamma=0.5)
    lb2.backward()
    print("INPLACE_LOOP", abs(lb2.item() - refb.item()) / refb.item(),
          ((zb2.grad - zb1.grad).abs().max() / zb1.grad.abs().max()).item())
    # bf16 logits read directly: loss in float32, gradient in bf16
    zb = z.bfloat16().requires_grad_()
    with backend("triton"):
        lb = TF.focal_loss(zb, y, gamma=2.0)
    lb.backward()
    zr = zb.detach().float().requires_grad_()
    lr = TF.focal_loss(zr, y, gamma=2.0); lr.backward()
    print("BF16", lb.dtype, zb.grad.dtype, abs(lb.item() - lr.item()) / lr.item(),
          ((zb.grad.float() - zr.grad).abs().max() / zr.grad.abs().max()).item())
    # empty batch
    for f in (lambda z, y: TF.cross_entropy_loss(z, y), lambda z, y: TF.sigmoid_focal_loss(z, torch.zeros(0, 5)),
              lambda z, y: TF.bal_bce_loss(z, y, [1, 2, 3, 4, 5])):
        ze = torch.zeros(0, 5, requires_grad=True)
        with backend("triton"):
            le = f(ze, torch.zeros(0, dtype=torch.long))
        le.backward()
        print("EMPTY", le.item(), tuple(ze.grad.shape))
    with backend("triton"):
        print("STABLE", TF.sigmoid_focal_loss(torch.tensor([16.]), torch.tensor([1.]), alpha=-1, gamma=0,
                                              reduction="sum").item())
    """)
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()}
    d_loss, d_grad = map(float, lines["INPLACE"])
    assert d_loss < 1e-6 and d_grad < 1e-6
    assert float(lines["INPLACE_LOOP"][0]) < 1e-5 and float(lines["INPLACE_LOOP"][1]) < 1e-4
    assert lines["BF16"][:2] == ["torch.float32", "torch.bfloat16"]
    assert float(lines["BF16"][2]) < 1e-5 and float(lines["BF16"][3]) < 1e-2
    assert [ln for ln in out.splitlines() if ln.startswith("EMPTY")] == ["EMPTY 0.0 (0, 5)"] * 3
    assert float(lines["STABLE"][0]) == pytest.approx(1.1254e-7, rel=1e-4)


@needs_triton
def test_triton_linear_cross_entropy_matches_torch_path():
    out = _run_interpreted("""
    import torch
    from tailwise.functional import linear_cross_entropy_loss as LCE
    from tailwise.kernels import backend
    torch.manual_seed(0)
    N, H, C = 13, 6, 9
    y = torch.randint(0, C, (N,)); y[::5] = -100
    cnt = torch.randint(1, 50, (C,)).tolist(); cw = (torch.rand(C) + 0.2).tolist()
    for kw in [dict(), dict(class_counts=cnt, tau=0.5, label_smoothing=0.1), dict(class_weight=cw, gamma=2.0),
               dict(reduction="sum", class_weight=cw), dict(reduction="none", gamma=0.5, class_counts=cnt)]:
        x = torch.randn(N, H); W = torch.randn(C, H); b = torch.randn(C)
        res = []
        for be in ("torch", "triton"):
            xs, Ws, bs = (t.clone().requires_grad_() for t in (x, W, b))
            with backend(be):
                l = LCE(xs, Ws, y, bs, chunk_size=4, **kw)
            go = torch.linspace(0.5, 1.5, l.numel()).reshape(l.shape)
            res.append((l.detach(),) + torch.autograd.grad((l * go).sum(), (xs, Ws, bs)))
        ev = ((res[0][0] - res[1][0]).abs().max() / res[0][0].abs().max()).item()
        eg = max(((a - c).abs().max() / a.abs().max()).item() for a, c in zip(res[0][1:], res[1][1:]))
        print("CASE", ev, eg)
    """)
    cases = [line.split() for line in out.splitlines() if line.startswith("CASE")]
    assert len(cases) == 5
    for _, ev, eg in cases:
        assert float(ev) <= 1e-5 and float(eg) <= 1e-4, (ev, eg)


@needs_triton
def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    if tailwise.kernels.triton_interpreter():
        pytest.skip("TRITON_INTERPRET=1 is set for this process")
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with backend("triton"):
        with pytest.raises(KernelBackendError, match="CPU"):
            TF.cross_entropy_loss(z, y)
        with pytest.raises(KernelBackendError, match="CPU"):
            TF.sigmoid_focal_loss(z, torch.rand(4, 3))
        with pytest.raises(KernelBackendError, match="CPU"):
            TF.linear_cross_entropy_loss(torch.randn(4, 2), torch.randn(3, 2), y)
        with pytest.raises(KernelBackendError, match="CPU"):
            TF.focal_loss(z.bfloat16(), y)


def test_auto_backend_on_cpu_uses_torch_path():
    for op in ("softmax_ce", "sigmoid_focal", "bal_bce", "eqlv2", "equalized_focal", "linear_ce"):
        assert tailwise.kernels.select(op, torch.randn(2, 2)) == "torch"


def test_list_ops_names_classification_ops():
    ops = tailwise.kernels.list_ops()
    for op in ("softmax_ce", "sigmoid_focal", "bal_bce", "eqlv2", "equalized_focal", "linear_ce"):
        assert "triton" in ops[op]["backends"] and ops[op]["losses"]
    assert "linear_cross_entropy" in ops["linear_ce"]["losses"]


# --- issue 15 focal fixes (torch path) ------------------------------------------------------

def test_sigmoid_focal_is_stable_for_confident_positives():
    loss = TF.sigmoid_focal_loss(torch.tensor([16.0]), torch.tensor([1.0]), alpha=-1, gamma=0, reduction="sum")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.1254e-07, rel=1e-4)
    # float32 keeps ~1e-6 relative precision far out in both tails (float64 is the truth)
    x = torch.tensor([-30.0, -16.0, -3.0, 0.0, 3.0, 16.0, 30.0])
    for t in (torch.ones(7), torch.zeros(7), torch.full((7,), 0.3)):
        for gamma in (0.0,):  # the (1 - p_t)^gamma factor keeps its historical form
            a = TF.sigmoid_focal_loss(x, t, alpha=0.25, gamma=gamma, reduction="none")
            b = TF.sigmoid_focal_loss(x.double(), t.double(), alpha=0.25, gamma=gamma, reduction="none")
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=0)


def test_focal_accepts_a_scalar_alpha():
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, -100])
    a = TF.focal_loss(z, y, alpha=0.25, gamma=2.0)
    b = TF.focal_loss(z, y, alpha=[0.25] * 4, gamma=2.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, 0.25 * TF.focal_loss(z, y, gamma=2.0))
    crit = tailwise.FocalLoss(alpha=0.25)
    torch.testing.assert_close(crit(z, y), a)
    crit2 = tailwise.FocalLoss(alpha=0.25)
    crit2.load_state_dict(crit.state_dict())
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        TF.focal_loss(z, y, alpha=-1.0)


# --- fused linear cross-entropy (torch path) -------------------------------------------------

def _naive_linear_ce(x, W, y, b, *, class_counts=None, tau=1.0, gamma=0.0, class_weight=None, label_smoothing=0.0,
                     ignore_index=-100, reduction="mean"):
    z = x @ W.T + (b if b is not None else 0)
    if class_counts is not None:
        c = torch.as_tensor(class_counts, dtype=torch.float64)
        z = z + (torch.log(c / c.sum()) * tau).to(z.dtype)
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=z.dtype)
    if gamma == 0:
        return F.cross_entropy(z, y, weight=cw, ignore_index=ignore_index, label_smoothing=label_smoothing,
                               reduction=reduction)
    # textbook softmax focal, F.cross_entropy's class-weight denominator for "mean"
    valid = y != ignore_index
    ys = torch.where(valid, y, torch.zeros_like(y))
    logp = F.log_softmax(z, 1).gather(1, ys[:, None])[:, 0]
    a = cw[ys] if cw is not None else torch.ones_like(logp)
    per = torch.where(valid, -a * (1 - logp.exp()) ** gamma * logp, torch.zeros_like(logp))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (a * valid).sum()


LCE_CASES = [dict(), dict(class_counts=[50, 20, 9, 5, 3, 1, 1]), dict(class_counts=[5, 4, 3, 3, 2, 2, 1], tau=0.5,
             label_smoothing=0.1), dict(class_weight=[1, 2, 0.5, 1, 3, 1, 0.2]), dict(gamma=2.0),
             dict(gamma=1.5, class_weight=[1, 2, 0.5, 1, 3, 1, 0.2], class_counts=[9, 8, 7, 6, 5, 4, 3]),
             dict(reduction="sum", label_smoothing=0.2), dict(reduction="none", class_counts=[3, 3, 3, 2, 2, 1, 1]),
             dict(reduction="none", gamma=2.0)]


@pytest.mark.parametrize("kw", LCE_CASES)
@pytest.mark.parametrize("chunk_size", [None, 1, 4, 100])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cross_entropy_matches_full_logits(kw, chunk_size, with_bias):
    g = torch.Generator().manual_seed(0)
    N, H, C = 11, 5, 7
    x = torch.randn(N, H, generator=g, requires_grad=True)
    W = torch.randn(C, H, generator=g, requires_grad=True)
    b = torch.randn(C, generator=g, requires_grad=True) if with_bias else None
    y = torch.randint(0, C, (N,), generator=g)
    y[::4] = -100
    leaves = (x, W, b) if with_bias else (x, W)
    ref = _naive_linear_ce(x, W, y, b, **kw)
    go = torch.rand(ref.shape, generator=g)
    g_ref = torch.autograd.grad((ref * go).sum(), leaves)
    out = TF.linear_cross_entropy_loss(x, W, y, b, chunk_size=chunk_size, **kw)
    g_out = torch.autograd.grad((out * go).sum(), leaves)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, c in zip(g_out, g_ref):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(class_counts=[5, 4, 3, 2, 1], label_smoothing=0.1, class_weight=[1, 2, 3, 1, 1.0]),
                                dict(gamma=2.0), dict(reduction="none", gamma=0.5), dict(reduction="sum")])
def test_linear_cross_entropy_gradcheck(kw):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, -100, 4, 2, 3, 1])
    assert torch.autograd.gradcheck(lambda x, W, b: TF.linear_cross_entropy_loss(x, W, y, b, chunk_size=3, **kw),
                                    (x, W, b))


def test_linear_cross_entropy_edge_cases_and_module():
    W = torch.randn(5, 4, requires_grad=True)
    x = torch.zeros(0, 4, requires_grad=True)
    loss = TF.linear_cross_entropy_loss(x, W, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and loss.grad_fn is not None and W.grad.abs().sum() == 0
    x = torch.randn(3, 4, requires_grad=True)
    loss = TF.linear_cross_entropy_loss(x, W, torch.full((3,), -100))  # all ignored: 0, not NaN
    loss.backward()
    assert loss.item() == 0 and torch.all(x.grad == 0)
    # only the input needs a gradient (frozen head), and no gradient at all (eval)
    W2 = W.detach()
    x2 = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    TF.linear_cross_entropy_loss(x2, W2, y).backward()
    torch.testing.assert_close(x2.grad, torch.autograd.grad(F.cross_entropy(x2 @ W2.T, y), x2)[0])
    with torch.no_grad():
        torch.testing.assert_close(TF.linear_cross_entropy_loss(x2, W2, y), F.cross_entropy(x2 @ W2.T, y))
    crit = tailwise.build_loss("linear_cross_entropy", class_counts=[5, 4, 3, 2, 1], tau=1.0)
    assert isinstance(crit, tailwise.LinearCrossEntropyLoss)
    torch.testing.assert_close(crit(x2, W2, y), TF.linear_cross_entropy_loss(x2, W2, y, class_counts=[5, 4, 3, 2, 1]))
    torch.testing.assert_close(crit(x2, W2, y), TF.balanced_softmax_loss(x2 @ W2.T, y, [5, 4, 3, 2, 1]))
    crit.load_state_dict(crit.state_dict())
    with pytest.raises(ValueError, match=r"weight must have shape \(C, H\)"):
        TF.linear_cross_entropy_loss(x2, torch.randn(5, 3), y)
    with pytest.raises(ValueError, match="target must be class indices in"):
        TF.linear_cross_entropy_loss(x2, W2, torch.tensor([0, 1, 2, 3, 5, 0]))
    with pytest.raises(ValueError, match="label_smoothing must be 0 when gamma > 0"):
        TF.linear_cross_entropy_loss(x2, W2, y, gamma=2.0, label_smoothing=0.1)
    with pytest.raises(ValueError, match="chunk_size must be None or a positive int"):
        TF.linear_cross_entropy_loss(x2, W2, y, chunk_size=0)
    with pytest.raises(TypeError, match="weight must have the input's dtype"):
        TF.linear_cross_entropy_loss(x2, W2.double(), y)


def test_linear_cross_entropy_bf16_and_large_logits():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(9, 8, generator=g) * 30).bfloat16().requires_grad_()
    W = torch.randn(6, 8, generator=g).bfloat16().requires_grad_()
    y = torch.randint(0, 6, (9,), generator=g)
    loss = TF.linear_cross_entropy_loss(x, W, y, chunk_size=4)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    ref = F.cross_entropy((x.float() @ W.float().T).bfloat16().float(), y)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


@needs_triton
def test_triton_kernels_compile_for_hopper():
    """The interpreter is lenient; compile the hot configurations to sm_90 machine code (no GPU
    needed: Triton ships ptxas) so a kernel that would not build on the GPU fails here."""
    if tailwise.kernels.triton_interpreter():
        pytest.skip("TRITON_INTERPRET=1: kernels are interpreted in this process")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, compile as tcompile
    except ImportError:
        pytest.skip("this Triton has no AOT compile entry point")
    from tailwise.kernels import _sigmoid_triton as G
    from tailwise.kernels import _softmax_ce_triton as S

    def build(fn, types, consts):
        sig, cst = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in consts:
                sig[name], cst[(i,)] = "constexpr", consts[name]
            else:
                sig[name] = types.get(name, "*fp32")
        try:
            tcompile(ASTSource(fn=fn, signature=sig, constexprs=cst), target=GPUTarget("cuda", 90, 32),
                     options={"num_warps": 8})
        except Exception as exc:  # noqa: BLE001
            if "ptxas" in str(exc).lower() and "not found" in str(exc).lower():
                pytest.skip(f"no ptxas: {exc}")
            raise

    ints = dict(Y="*i64", R="i32", C="i32", D="i32", s_n="i64", s_c="i64", s_d="i64", g_n="i64", g_c="i64",
                g_d="i64", go_s="i64", gamma="fp32", eps="fp32", inv_c="fp32", ignore_index="i32")
    for xdt in ("fp32", "bf16"):
        t = dict(ints, X="*" + xdt, G="*" + xdt)
        for single, focal, smooth in ((True, False, True), (True, True, False), (False, False, True),
                                      (False, True, False)):
            build(S._fwd, dict(t, FLAG="*i32"),
                  dict(HAS_OFF=True, HAS_SCL=True, HAS_W=True, FOCAL=focal, SMOOTH=smooth, WRITE_GRAD=True,
                       SINGLE=single, CHECK=single, WANT_DEN=single, BLOCK_R=4 if single else 1,
                       BLOCK_C=1024 if single else 4096,
                       NUM_CB=1 if single else 8))
        # unweighted label smoothing: W = C from the class count, no tensor
        build(S._fwd, dict(t, FLAG="*i32"),
              dict(HAS_OFF=False, HAS_SCL=False, HAS_W=False, FOCAL=False, SMOOTH=True, WRITE_GRAD=False,
                   SINGLE=True, CHECK=True, WANT_DEN=False, BLOCK_R=4, BLOCK_C=1024, NUM_CB=1))
        build(S._bwd, t, dict(HAS_OFF=True, HAS_SCL=True, HAS_W=True, SMOOTH=True, BLOCK_R=4, BLOCK_C=1024, NUM_CB=1))
        build(S._bwd, t, dict(HAS_OFF=False, HAS_SCL=False, HAS_W=False, SMOOTH=True, BLOCK_R=4, BLOCK_C=1024,
                              NUM_CB=1))
        st = dict(X="*" + xdt, G="*" + xdt, Y="*i64", R="i32", C="i32", on="fp32", off="fp32", alpha="fp32",
                  gamma="fp32", go_sr="i64", go_sc="i64")
        flags = dict(DENSE=False, HAS_B=True, HAS_PQ=True, ALPHA=True, FOCAL=True, HAS_GV=True, BLOCK_R=32,
                     BLOCK_C=128, NUM_CB=1)
        build(G._fwd, st, dict(flags, ROW_SUM=True, G2=False))
        build(G._bwd, st, dict(flags, DENSE=True, GO_MODE=2, G2=False))
        for wide, go_mode in ((False, 1), (True, 0)):
            build(G._bwd_flat, dict(st, N="i64" if wide else "i32"),
                  dict(flags, HAS_GV=False, G2=True, GO_MODE=go_mode, WIDE=wide, BLOCK=512))


@needs_triton
def test_triton_paths_trace_with_torch_compile_fullgraph():
    out = _run_interpreted("""
    import os
    os.environ["TAILWISE_KERNELS"] = "triton"
    import torch
    from tailwise.kernels.softmax_ce import softmax_cross_entropy
    from tailwise.kernels import sigmoid_family as S
    from tailwise.kernels.linear_ce import linear_cross_entropy
    torch.manual_seed(0)
    z = torch.randn(8, 5, requires_grad=True); y = torch.randint(0, 5, (8,)); W = torch.randn(3, 5, requires_grad=True)
    off, pw, nw = torch.randn(5), torch.rand(5), torch.rand(5)
    fs = [lambda z, y: softmax_cross_entropy(z, y, off, None, None, 0.0, 0.1).sum(),
          lambda z, y: softmax_cross_entropy(z, y, None, None, pw, 2.0, 0.0, -100, True).sum(),
          lambda z, y: S.run("sigmoid_focal", z, y, 0.25, 2.0, row_sum=True).sum(),
          lambda z, y: S.run("eqlv2", z, y, pw, nw, 0.125, True, 5)[0],
          lambda z, y: linear_cross_entropy(z, W, y % 3, chunk_size=3),
          lambda z, y: linear_cross_entropy(z, W, y % 3, chunk_size=3, reduction="none").sum()]
    for f in fs:
        ref = f(z, y); gref = torch.autograd.grad(ref, z)[0]
        torch._dynamo.reset()
        out = torch.compile(f, fullgraph=True)(z, y); g = torch.autograd.grad(out, z)[0]
        print("CASE", (out - ref).abs().item(), (g - gref).abs().max().item())
    """)
    cases = [line.split() for line in out.splitlines() if line.startswith("CASE")]
    assert len(cases) == 6
    for _, dv, dg in cases:
        assert float(dv) < 1e-5 and float(dg) < 1e-5


@needs_triton
def test_sigmoid_kernel_launch_configurations_agree():
    """Every launch layout of the sigmoid kernels (the tuning knob's 2-D backward, other tiles,
    grad_output as scalar / per row / per element) gives the torch path's value and gradient."""
    out = _run_interpreted("""
        import torch, tailwise.functional as TF
        from tailwise.kernels import backend
        from tailwise.kernels import _sigmoid_triton as S
        from tailwise.classification.equalized_focal import equalized_focal_loss
        torch.manual_seed(0)
        N, C = 11, 9
        z0 = torch.randn(N, C) * 3; y = torch.randint(0, C, (N,)); t = (torch.rand(N, C) > 0.6).float()
        w1, w2, p, q = torch.rand(N, 1), torch.rand(N, C), torch.rand(C), torch.rand(C)
        cases = [lambda z: TF.sigmoid_focal_loss(z, t), lambda z: TF.sigmoid_focal_loss(z, t, sample_weight=w2),
                 lambda z: TF.sigmoid_focal_loss(z, t, gamma=1.5, sample_weight=w1, reduction="none"),
                 lambda z: TF.bal_bce_loss(z, y, list(range(1, C + 1))),
                 lambda z: equalized_focal_loss(z, y, p, q, reduction="none")]
        for fwd, bwd in [((4, 4, 1), ("2d", 4, 4, 1)), ((2, 16, 1), ("flat", 16, 1)), (None, ("flat", 32, 1))]:
            S.TUNE["fwd"], S.TUNE["bwd"] = fwd, bwd
            for f in cases:
                r = {}
                for be in ("torch", "triton"):
                    z = z0.clone().requires_grad_()
                    with backend(be):
                        v = f(z)
                    v.sum().backward()
                    r[be] = (v.detach(), z.grad)
                assert torch.allclose(r["torch"][0], r["triton"][0], rtol=1e-5, atol=1e-6), (fwd, bwd)
                assert torch.allclose(r["torch"][1], r["triton"][1], rtol=1e-4, atol=1e-6), (fwd, bwd)
        print("ok")
    """)
    assert out.strip().endswith("ok")
