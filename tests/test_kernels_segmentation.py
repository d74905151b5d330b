"""Op ``overlap_index``: the fused Triton overlap kernel (Triton's interpreter on CPU) against the
torch path, for Dice, Tversky, Focal Tversky and Dice+CE, in 2-D and 3-D, with every option.
"""

from __future__ import annotations


import pytest
import torch

import tailwise
import tailwise.functional as F
from tailwise.kernels import KernelBackendError, backend, dispatch, select

tl = pytest.importorskip("triton.language")

LOSSES = {"dice": F.dice_loss, "tversky": F.tversky_loss, "focal_tversky": F.focal_tversky_loss,
          "dice_ce": F.dice_ce_loss, "generalized_dice": F.generalized_dice_loss}


from _interpreted_module import INTERPRETED, interpreter, run_interpreted  # noqa: E402,F401


def test_module_in_the_triton_interpreter():
    run_interpreted(__file__)


def inputs(shape, seed, ignore=True, binary=False, dtype=torch.float32):
    """Logits (N, C, *S) and index targets with some ignored pixels and one fully ignored image."""
    g = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, 2 if binary else c, (n,) + tuple(shape[2:]), generator=g)
    if ignore:
        t.view(n, -1)[:, ::5] = -100
        if n > 2:
            t[-1] = -100  # an image with no valid pixel
    return x.to(dtype), t


def both(fn, x, t, **kw):
    out = []
    for be in ("torch", "triton"):
        xx = x.clone().requires_grad_(True)
        with backend(be):
            loss = fn(xx, t, **kw)
        up = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        (loss * up).sum().backward()
        out.append((loss.detach(), xx.grad))
    (l0, g0), (l1, g1) = out
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-6)
    return out


SHAPES = {"2d": (3, 5, 7, 9), "3d": (2, 4, 5, 6, 3), "2d-c19": (2, 19, 5, 3)}
OPTIONS = [
    {},
    {"batch": True},
    {"reduction": "none", "include_background": False},
    {"reduction": "sum"},
    {"class_weight": "cw"},
    {"ignore_index": None},
]


# every option in 2-D; 3-D and the padded class dimension (C = 19 -> 32) with the default and batch=True
CONFIGS = [("2d", o) for o in OPTIONS] + [(s, o) for s in ("3d", "2d-c19") for o in OPTIONS[:2]]


@pytest.mark.parametrize("shape, opts", CONFIGS, ids=lambda v: v if isinstance(v, str) else ",".join(v) or "default")
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_multiclass_matches_torch_path(name, shape, opts):
    x, t = inputs(SHAPES[shape], seed=1, ignore=opts.get("ignore_index", -100) is not None)
    kw = dict(opts)
    if name == "generalized_dice" and "class_weight" in kw:
        pytest.skip("generalized_dice weights classes from the target (w_type), no class_weight")
    if kw.get("class_weight") == "cw":
        kw["class_weight"] = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(2)) + 0.1
    both(LOSSES[name], x, t, **kw)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("shape", [(3, 1, 7, 9), (2, 1, 3, 4, 5)])
def test_binary_sigmoid_matches_torch_path(name, shape):
    x, t = inputs(shape, seed=3, binary=True)
    both(LOSSES[name], x, t, mode="binary")
    both(LOSSES[name], x, t, mode="binary", batch=True)


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_probabilities_and_squared_pred(mode):
    x, t = inputs((3, 1 if mode == "binary" else 4, 6, 5), seed=4, binary=mode == "binary")
    probs = torch.sigmoid(x) if mode == "binary" else torch.softmax(x, 1)
    for fn in (F.dice_loss, F.tversky_loss):
        both(fn, probs, t, mode=mode, from_logits=False)
    both(F.dice_loss, x, t, mode=mode, squared_pred=True)
    both(F.dice_loss, probs, t, mode=mode, squared_pred=True, from_logits=False)
    both(F.dice_ce_loss, x, t, mode=mode, squared_pred=True)


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_peer_options_keep_the_kernel_in_agreement(mode):
    """Issue 18's options on class-index targets: the statistics the kernel returns feed
    soft_label / micro / unnormalised weights / split smoothing, and dice_activation feeds it
    sigmoid probabilities or raw (negative) scores in its no-activation form."""
    c = 1 if mode == "binary" else 4
    x, t = inputs((3, c, 6, 5), seed=12, binary=mode == "binary")
    w = torch.rand(c, generator=torch.Generator().manual_seed(13)) + 0.1
    for fn in (F.dice_loss, F.tversky_loss, F.dice_ce_loss):
        both(fn, x, t, mode=mode, soft_label=True, smooth_nr=0.0, smooth_dr=0.5)
        both(fn, x, t, mode=mode, average="micro", class_weight=w)
        both(fn, x, t, mode=mode, class_weight=w, normalize_class_weight=False, batch=True)
    acts = ("sigmoid", "none") if mode == "binary" else ("sigmoid", "none", "softmax")
    for act in acts:
        both(F.dice_ce_loss, x, t, mode=mode, dice_activation=act)
        both(F.dice_ce_loss, x, t, mode=mode, dice_activation=act, soft_label=True, lambda_ce=0.5)


def test_several_tiles_per_program_and_masked_tail():
    # C = 3 -> 512 pixels per tile; 2501 pixels -> 5 tiles over 2 programs of 3 tiles per image
    # (the last program's third tile is entirely out of range)
    x, t = inputs((1, 3, 2501), seed=5)
    both(F.dice_loss, x, t)
    both(F.dice_ce_loss, x, t, class_weight=torch.tensor([0.2, 1.0, 3.0]))
    x, t = inputs((2, 3, 1500), seed=6)
    both(F.tversky_loss, x, t, batch=True)


def test_uint8_target_and_ignore_255():
    x, _ = inputs((2, 3, 5, 7), seed=7)
    t = torch.randint(0, 3, (2, 5, 7), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
    t[0, 0] = 255
    both(F.dice_loss, x, t, ignore_index=255)
    both(F.dice_ce_loss, x, t, ignore_index=255)


def test_extreme_logits_stay_finite():
    x, t = inputs((2, 4, 5, 5), seed=9)
    x = x * 500
    l0, l1 = both(F.dice_ce_loss, x, t)
    assert torch.isfinite(l1[0]).all() and torch.isfinite(l1[1]).all()


def test_empty_batch_and_empty_image():
    for shape in ((0, 3, 4, 4), (2, 3, 0)):
        x = torch.zeros(*shape, requires_grad=True)
        t = torch.zeros((shape[0],) + shape[2:], dtype=torch.long)
        for name, fn in LOSSES.items():
            with backend("torch"):
                ref = fn(x, t, reduction="sum")
            with backend("triton"):
                got = fn(x, t, reduction="sum")
            got.backward()
            torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("mode, from_logits", [("multiclass", True), ("multiclass", False), ("binary", True)])
def test_op_gradcheck_float64(mode, from_logits):
    """The hand-written backward (statistics and CE term) against finite differences."""
    c = 1 if mode == "binary" else 3
    x, t = inputs((2, c, 7), seed=10, binary=mode == "binary", dtype=torch.float64)
    t[0, 1] = -100
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x.requires_grad_(True)
    coef = torch.rand(6, 2, c, generator=torch.Generator().manual_seed(11), dtype=torch.float64)

    def f(x):
        with backend("triton"):
            tp, sp, sy, sq, _, ce, norm = dispatch("overlap_index", x, t, -100, mode, from_logits, True,
                                                  from_logits, w if mode == "multiclass" else None)
        out = (coef[0] * tp).sum() + (coef[1] * sp).sum() + (coef[2] * sq).sum()
        return out + ((coef[3, :, 0] * ce).sum() if from_logits else 0)

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)


def test_compile_fullgraph_through_the_custom_op_and_on_the_torch_path():
    x, t = inputs((2, 3, 5, 7), seed=12)
    xf, tf = x.reshape(2, 3, 35), t.reshape(2, 35)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    def stats_loss(x):
        tp, sp, sy, _, _, ce, norm = dispatch("overlap_index", x, tf, -100, "multiclass", True, False, True, None)
        return (1 - (2 * tp + 1) / (sp + sy + 1)).mean() + ce.sum() / norm.sum()

    for be in ("torch", "triton"):
        torch._dynamo.reset()
        a1, a2 = xf.clone().requires_grad_(True), xf.clone().requires_grad_(True)
        with backend(be):
            v1 = torch.compile(stats_loss, fullgraph=True, backend=capture)(a1)
            v2 = stats_loss(a2)
        v1.backward()
        v2.backward()
        torch.testing.assert_close(v1, v2)
        torch.testing.assert_close(a1.grad, a2.grad)
    assert any("overlap_index_fwd" in code for code in graphs)


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x, t = inputs((2, 3, 4, 4), seed=13)
    with backend("triton"), pytest.raises(KernelBackendError, match="CPU"):
        F.dice_loss(x, t)


def test_auto_keeps_cpu_tensors_on_the_torch_path():
    x, t = inputs((2, 3, 4, 4), seed=14)
    with backend("auto"):
        assert select("overlap_index", x, t) == "torch"
    assert set(tailwise.kernels.list_ops()["overlap_index"]["losses"]) == {"dice", "tversky", "focal_tversky", "dice_ce",
                                                                           "generalized_dice"}


@pytest.mark.parametrize("be", ["torch", "triton"])
def test_dice_ce_checks_class_weight_before_the_fused_pass(be):
    x, t = inputs((2, 3, 4, 4), seed=15)
    with backend(be), pytest.raises(ValueError, match="one entry per class"):
        F.dice_ce_loss(x, t, class_weight=torch.ones(2))


def test_kernels_compile_for_hopper():
    """The interpreter is lenient: build the kernels to sm_90 machine code (Triton ships ptxas, no
    GPU needed) so a kernel that would not compile on the GPU fails here."""
    if INTERPRETED:
        pytest.skip("Triton is interpreted in this process")
    pytest.importorskip("triton.backends.compiler")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as tcompile

    from tailwise.kernels import _overlap_triton as K
    common = {"x_ptr": "*fp32", "t_ptr": "*i64", "w_ptr": "*fp32", "C": "i32", "S": "i32", "ignore_index": "i32",
              "C_PAD": "constexpr", "BLOCK_S": "constexpr", "ACT": "constexpr", "OFFSET": "constexpr",
              "HAS_IGNORE": "constexpr", "SQUARED": "constexpr", "CE": "constexpr", "HAS_W": "constexpr"}
    fwd = dict(common, part_ptr="*fp32", flag_ptr="*i32", tiles_per_prog="i32", CHECK="constexpr")
    bwd = dict(common, gtp_ptr="*fp32", gsp_ptr="*fp32", gsq_ptr="*fp32", gce_ptr="*fp32", dx_ptr="*fp32",
               s_tp_n="i64", s_tp_c="i64", s_sp_n="i64", s_sp_c="i64", s_sq_n="i64", s_sq_c="i64", s_ce="i64",
               HAS_GTP="constexpr", HAS_GSP="constexpr", ACC64="constexpr")
    for act, offset, c in ((1, 0, 14), (2, 1, 1)):
        c_pad, block_s = K._meta(c)
        consts = dict(C_PAD=c_pad, BLOCK_S=block_s, ACT=act, OFFSET=offset, HAS_IGNORE=True, SQUARED=True,
                      CE=True, HAS_W=act == 1)
        for fn, sig in ((K._overlap_fwd_kernel, fwd), (K._overlap_bwd_kernel, bwd)):
            if fn is K._overlap_fwd_kernel:
                consts = dict(consts, CHECK=True)
            if fn is K._overlap_bwd_kernel:
                consts = dict(consts, HAS_GTP=True, HAS_GSP=True, ACC64=False)
                consts.pop("CHECK", None)
            sig = {name: sig[name] for name in fn.arg_names}
            tcompile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                     options={"num_warps": K._WARPS})
