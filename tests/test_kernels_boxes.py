"""Op ``box_loss``: the Triton kernels (run in Triton's interpreter on CPU) against the torch path.

Every loss of the family, every box format, degenerate boxes (identical, zero-area, point boxes,
ties, disjoint), validation, leading batch shapes, the empty batch, float64 gradcheck of the
hand-written backward, and torch.compile(fullgraph=True) through the custom op.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import tailwise
import tailwise.functional as F
from tailwise.boxes import box_convert
from tailwise.kernels import KernelBackendError, backend, dispatch, select

tl = pytest.importorskip("triton.language")

FORMATS = ("xyxy", "xywh", "cxcywh")
LOSSES = {
    "iou": (F.iou_loss, {}),
    "iou_log": (F.iou_loss, {"mode": "log"}),
    "giou": (F.giou_loss, {}),
    "diou": (F.diou_loss, {}),
    "ciou": (F.ciou_loss, {}),
    "eiou": (F.eiou_loss, {}),
    "focal_eiou": (F.focal_eiou_loss, {"gamma": 0.5}),
    "cdiou": (F.cdiou_loss, {"lambda_": 0.7}),
}


from _interpreted_module import INTERPRETED, interpreter, run_interpreted  # noqa: E402,F401


def test_module_in_the_triton_interpreter():
    run_interpreted(__file__)


def degenerate_boxes(n: int, seed: int, dtype=torch.float32):
    """xyxy pairs with every degenerate case the family handles, then random pairs."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 5 + 0.1
    P = torch.cat([xy, xy + wh], 1)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 5 + 0.1
    T = torch.cat([xy, xy + wh], 1)
    T[0:3] = P[0:3]                                      # identical boxes: ties everywhere
    T[3:6, 0] = P[3:6, 0]                                # x1 ties
    T[3:6, 2] = torch.maximum(T[3:6, 2], T[3:6, 0])
    T[6:8, 3] = P[6:8, 3]                                # y2 ties
    T[6:8, 1] = torch.minimum(T[6:8, 1], T[6:8, 3])
    P[8, 2] = P[8, 0]                                    # zero-width prediction
    T[9] = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # point target
    P[10] = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64)  # point prediction
    T[10] = P[10]                                        # ... on an identical point
    P[11] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)  # disjoint pair
    T[11] = torch.tensor([5.0, 5.0, 6.0, 7.0], dtype=torch.float64)
    P[12] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)  # touching edges (iw == 0)
    T[12] = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    return P.to(dtype), T.to(dtype)


def run(name, P, T, be, fmt="xyxy", reduction="none", need_t=True, **kw):
    fn, extra = LOSSES[name]
    a = P.clone().requires_grad_(True)
    b = T.clone().requires_grad_(need_t)
    with backend(be):
        loss = fn(a, b, box_format=fmt, reduction=reduction, **extra, **kw)
    up = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (loss * up).sum().backward()
    return loss.detach(), a.grad, (b.grad if need_t else None)


def assert_match(ref, got):
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    for r, g in zip(ref[1:], got[1:]):
        if r is None:
            assert g is None
            continue
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_matches_torch_path_value_and_grad(name, fmt):
    P, T = degenerate_boxes(37, seed=1)  # 37: one partly masked program
    P, T = box_convert(P, "xyxy", fmt), box_convert(T, "xyxy", fmt)
    reduction = "mean" if name == "focal_eiou" else "none"
    assert_match(run(name, P, T, "torch", fmt, reduction), run(name, P, T, "triton", fmt, reduction))


@pytest.mark.parametrize("name", ["giou", "ciou", "cdiou"])
def test_several_programs_and_prediction_only_grad(name):
    P, T = degenerate_boxes(1100, seed=2)  # > one 1024-box program
    assert_match(run(name, P, T, "torch", need_t=False), run(name, P, T, "triton", need_t=False))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_inverted_boxes_without_validation(name):
    P, T = degenerate_boxes(19, seed=3)
    P[::3] = P[::3][:, [2, 3, 0, 1]]  # inverted predictions
    reduction = "mean" if name == "focal_eiou" else "none"
    ref = run(name, P, T, "torch", reduction=reduction, validate=False)
    got = run(name, P, T, "triton", reduction=reduction, validate=False)
    assert_match(ref, got)


@pytest.mark.parametrize("name", ["iou", "giou", "ciou", "eiou", "cdiou"])
def test_validation_raises_the_exact_error(name):
    P, T = degenerate_boxes(13, seed=4)
    P[5] = torch.tensor([3.0, 0.0, 1.0, 1.0])
    fn, extra = LOSSES[name]
    with pytest.raises(ValueError) as torch_err:
        with backend("torch"):
            fn(P, T, **extra)
    with pytest.raises(ValueError) as triton_err:
        with backend("triton"):
            fn(P, T, **extra)
    assert str(triton_err.value) == str(torch_err.value)
    assert "box index 5" in str(triton_err.value)
    T[2, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"), backend("triton"):
        fn(P.abs().sort(-1).values, T, **extra)


def test_batch_shapes_weights_and_empty():
    P, T = degenerate_boxes(24, seed=5)
    P, T = P.reshape(2, 3, 4, 4), T.reshape(2, 3, 4, 4)
    w = torch.rand(2, 3, 4)
    for name in ("giou", "eiou", "focal_eiou"):
        fn, extra = LOSSES[name]
        with backend("torch"):
            ref = fn(P, T, sample_weight=w, **extra)
        with backend("triton"):
            got = fn(P, T, sample_weight=w, **extra)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for name in sorted(LOSSES):
        fn, extra = LOSSES[name]
        e = torch.zeros(0, 4, requires_grad=True)
        with backend("triton"):
            out = fn(e, torch.zeros(0, 4), **extra)
        out.backward()
        assert out.item() == 0 and e.grad.shape == (0, 4)


@pytest.mark.parametrize("kind, fmt", [(k, "xyxy") for k in ("iou", "iou_log", "giou", "diou", "eiou", "cdiou")]
                         + [("giou", "xywh"), ("cdiou", "cxcywh")])
def test_gradcheck_float64(kind, fmt):
    # the hand-written backward of every kind (CIoU's alpha is detached on purpose, atan2 is a
    # float32-accurate polynomial: compared with the torch path above instead)
    P, T = degenerate_boxes(16, seed=6, dtype=torch.float64)
    P, T = P[13:16], T[13:16] + 0.25  # generic positions: no ties, where finite differences are exact
    P, T = box_convert(P, "xyxy", fmt), box_convert(T, "xyxy", fmt)
    P.requires_grad_(True)
    T.requires_grad_(True)

    def f(a, b):
        with backend("triton"):
            return dispatch("box_loss", a, b, kind, fmt, 1e-7, False, 0.7, False)[0]

    assert torch.autograd.gradcheck(f, (P, T), fast_mode=True)


def test_compile_fullgraph_through_the_custom_op():
    P, T = degenerate_boxes(13, seed=7)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    for name in ("giou", "cdiou", "focal_eiou"):
        fn, extra = LOSSES[name]
        torch._dynamo.reset()
        a1, a2 = P.clone().requires_grad_(True), P.clone().requires_grad_(True)
        with backend("triton"):
            compiled = torch.compile(lambda x: fn(x, T, **extra), fullgraph=True, backend=capture)
            v1 = compiled(a1)
            v2 = fn(a2, T, **extra)
        v1.backward()
        v2.backward()
        torch.testing.assert_close(v1, v2)
        torch.testing.assert_close(a1.grad, a2.grad)
    assert any("box_loss_fwd" in code for code in graphs)


def test_cpu_torch_path_compiles_fullgraph():
    P, T = degenerate_boxes(13, seed=8)
    for name in ("giou", "iou_log", "focal_eiou", "cdiou"):  # the fused Function and the autograd kinds
        fn, extra = LOSSES[name]
        torch._dynamo.reset()
        with backend("torch"):
            got = torch.compile(lambda x: fn(x, T, **extra), fullgraph=True, backend="aot_eager")(P)
            torch.testing.assert_close(got, fn(P, T, **extra))


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    P, T = degenerate_boxes(13, seed=9)
    with backend("triton"), pytest.raises(KernelBackendError, match="CPU"):
        F.giou_loss(P, T)


def test_auto_keeps_cpu_tensors_on_the_torch_path():
    P, T = degenerate_boxes(13, seed=10)
    with backend("auto"):
        assert select("box_loss", P, T) == "torch"
    assert "box_loss" in tailwise.kernels.list_ops()
    assert tailwise.kernels.list_ops()["box_loss"]["backends"] == ["torch", "compile", "triton"]


def test_import_tailwise_imports_neither_triton_nor_dynamo():

    code = "import sys, tailwise; print('triton' in sys.modules, 'torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _compile_sm90(fn, signature, constexprs):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as tcompile
    return tcompile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                    target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


def test_kernels_compile_for_hopper():
    """The interpreter is lenient: build the kernels to sm_90 machine code (Triton ships ptxas, no
    GPU needed) so a kernel that would not compile on the GPU fails here."""
    if INTERPRETED:
        pytest.skip("Triton is interpreted in this process")
    pytest.importorskip("triton.backends.compiler")
    from tailwise.kernels import _box_triton as K
    fwd = {"p_ptr": "*fp32", "t_ptr": "*fp32", "loss_ptr": "*fp32", "iou_ptr": "*fp32", "flag_ptr": "*i32",
           "N": "i32", "eps": "fp32", "lam": "fp32", "KIND": "constexpr", "FMT": "constexpr",
           "WANT_IOU": "constexpr", "VALIDATE": "constexpr", "BLOCK": "constexpr"}
    bwd = {"p_ptr": "*fp32", "t_ptr": "*fp32", "g_ptr": "*fp32", "gp_ptr": "*fp32", "gt_ptr": "*fp32", "N": "i32",
           "eps": "fp32", "lam": "fp32", "KIND": "constexpr", "FMT": "constexpr", "NEED_P": "constexpr",
           "NEED_T": "constexpr", "BLOCK": "constexpr"}
    for kind in ("giou", "ciou", "cdiou"):
        k = K._KIND_IDS[kind]
        _compile_sm90(K._box_fwd_kernel, {n: fwd[n] for n in K._box_fwd_kernel.arg_names}, {"KIND": k, "FMT": 2, "WANT_IOU": True, "VALIDATE": True, "BLOCK": 1024})
        _compile_sm90(K._box_bwd_kernel, {n: bwd[n] for n in K._box_bwd_kernel.arg_names}, {"KIND": k, "FMT": 2, "NEED_P": True, "NEED_T": True, "BLOCK": 1024})
