r"""Triton kernels of op ``contrastive_rows`` (see :mod:`tailwise.kernels.contrastive_lse`).

Flash-attention style: a program owns ``BLOCK_M`` anchor rows (their features stay in
registers) and walks the contrast set in ``BLOCK_N``-row tiles. Each tile's similarities
``S = A C^T`` live only on chip; the forward keeps an online (max, sum) logsumexp per row in base
2 and adds the positive statistics, with positives decided in-kernel by label equality (no mask
tensor). Nothing ``(M, L)``-sized is written to memory.

The backward recomputes the tiles from the saved row ``lse`` and the incoming gradients
``g_lse`` and ``g_dot``:

    dL/ds_ij = g_lse_i * scale * softmax_ij + g_dot_i * w_j * [j in P(i)]

then ``dA = G C`` and ``dC = G^T A`` by tiled matmuls, each program owning its output rows
(deterministic, no atomics):

* general case: one kernel over anchor blocks (``dA``) and one over contrast blocks (``dC``);
  two recomputations of ``S``, five ``N^2 D`` matmuls in all with the forward;
* ``symmetric`` (anchors are the contrast rows: SupCon "all", NT-Xent, DCL, unsharded): the one
  feature matrix ``X`` gets ``dX_I = sum_J (G_IJ + G_JI^T) X_J`` from a single pass that evaluates
  every tile once from both of its sides; three ``N^2 D`` matmuls in all, the floor.

Precision: ``tl.dot`` accumulates in float32. float32 inputs use TF32 tensor cores only when
PyTorch allows TF32 for float32 matmuls (``torch.backends.cuda.matmul.fp32_precision == "tf32"``,
i.e. ``allow_tf32 = True`` or ``set_float32_matmul_precision("high"/"medium")``), otherwise
full-precision ``"ieee"`` FMA. bfloat16/float16 features (the dtype the caller passed, see
:func:`~tailwise.kernels.contrastive_lse.keeps_feature_dtype`) run on tensor cores in their own
dtype; the softmax gradient tile is rounded to that dtype before its matmul, as flash-attention
does. Everything elementwise (logits, exp2, sums) is float32.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._dispatch import triton_interpreter
from ._host import cdiv, next_pow2
from .contrastive_lse import _rows_torch, dot_precision, feature_dtype

if triton_interpreter():
    from ._triton_compat import patch_interpreter_index
    patch_interpreter_index()

__all__ = ["contrastive_rows", "dot_precision"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# one feature tile per row block; larger D runs the torch path. float32 stops at 128: at D = 256
# its tiles (and tf32x3's split copies) exceed the registers / shared memory of an SM
MAX_D = {torch.float16: 256, torch.bfloat16: 256, torch.float32: 128}


@triton.jit
def _z_tile(s, i_ok, j, j_ok, self0, self1, alab, clab, cb, sb, scale_log2,
            KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr):
    """Base-2 logits of one tile and its positive mask; every argument is broadcast to the tile.

    ``j`` is the contrast index of each element and ``self0``/``self1`` its row's excluded columns,
    so the same code serves a tile and its transpose.
    """
    z = s * scale_log2
    if HAS_CB:
        z = z + cb * 1.4426950408889634
    valid = i_ok & j_ok
    if KS >= 1:
        valid = valid & (j != self0)
    if KS >= 2:
        valid = valid & (j != self1)
    if HAS_LAB:
        same = valid & (alab == clab)
    else:
        same = valid & (j < 0)
    if HAS_SB:
        z = tl.where(same, z + sb * 1.4426950408889634, z)
    z = tl.where(valid, z, float("-inf"))
    return z, same


@triton.jit
def _rows_fwd(A, C, SELF, ALAB, CLAB, CB, SB, PW, LSE, PDOT, PCNT,
              M, L, D, stride_a, stride_c, scale_log2,
              KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr,
              HAS_PW: tl.constexpr, POS: tl.constexpr, PREC: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    m_ok = rm < M
    d_ok = rd < D
    a = tl.load(A + rm[:, None] * stride_a + rd[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    self0 = rm
    self1 = rm
    if KS >= 1:
        self0 = tl.load(SELF + rm * KS, mask=m_ok, other=-1)
    if KS >= 2:
        self1 = tl.load(SELF + rm * KS + 1, mask=m_ok, other=-1)
    alab = rm
    if HAS_LAB:
        alab = tl.load(ALAB + rm, mask=m_ok, other=0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    pdot = tl.zeros([BLOCK_M], tl.float32)
    pcnt = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, L, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        n_ok = rn < L
        c = tl.load(C + rn[:, None] * stride_c + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(a, tl.trans(c), input_precision=PREC)
        clab = rn
        cb = tl.zeros([BLOCK_N], tl.float32)
        sb = tl.zeros([BLOCK_N], tl.float32)
        if HAS_LAB:
            clab = tl.load(CLAB + rn, mask=n_ok, other=0)
        if HAS_CB:
            cb = tl.load(CB + rn, mask=n_ok, other=0.0)
        if HAS_SB:
            sb = tl.load(SB + rn, mask=n_ok, other=0.0)
        z, same = _z_tile(s, m_ok[:, None], rn[None, :], n_ok[None, :], self0[:, None], self1[:, None],
                          alab[:, None], clab[None, :], cb[None, :], sb[None, :], scale_log2,
                          KS, HAS_LAB, HAS_CB, HAS_SB)
        m_new = tl.maximum(m_i, tl.max(z, 1))
        # a row with nothing valid so far keeps m = -inf; shift by 0 there (no inf - inf)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_use) + tl.sum(tl.exp2(z - m_use[:, None]), 1)
        m_i = m_new
        if POS:
            if HAS_PW:
                pw = tl.load(PW + rn, mask=n_ok, other=0.0)
                pdot += tl.sum(tl.where(same, s * pw[None, :], 0.0), 1)
            else:
                pdot += tl.sum(tl.where(same, s, 0.0), 1)
            pcnt += tl.sum(same.to(tl.float32), 1)
    # empty row (and padding): lse = -inf without evaluating log2(0); NaN still propagates
    empty = l_i == 0.0
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    tl.store(LSE + rm, lse, mask=m_ok)
    if POS:
        tl.store(PDOT + rm, pdot, mask=m_ok)
        tl.store(PCNT + rm, pcnt, mask=m_ok)


@triton.jit
def _grad_tile(s, i_ok, j, j_ok, self0, self1, alab, clab, cb, sb, pw, lse2, glse, gdot, scale_log2,
               KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr,
               HAS_PW: tl.constexpr, HAS_GDOT: tl.constexpr):
    """``dL/ds`` of one tile (``glse`` already carries the scale); arguments broadcast to the tile."""
    z, same = _z_tile(s, i_ok, j, j_ok, self0, self1, alab, clab, cb, sb, scale_log2, KS, HAS_LAB, HAS_CB, HAS_SB)
    g = glse * tl.exp2(z - lse2)
    if HAS_GDOT:
        if HAS_PW:
            g += tl.where(same, gdot * pw, 0.0)
        else:
            g += tl.where(same, gdot, 0.0)
    return g


@triton.jit
def _row_stats(SELF, ALAB, LSE, GLSE, GDOT, r, r_ok, scale,
               KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_GDOT: tl.constexpr):
    """Per-anchor values the gradient tile needs: excluded columns, label, lse (base 2), gradients."""
    self0 = r
    self1 = r
    if KS >= 1:
        self0 = tl.load(SELF + r * KS, mask=r_ok, other=-1)
    if KS >= 2:
        self1 = tl.load(SELF + r * KS + 1, mask=r_ok, other=-1)
    lab = r
    if HAS_LAB:
        lab = tl.load(ALAB + r, mask=r_ok, other=0)
    lse2 = tl.load(LSE + r, mask=r_ok, other=0.0) * 1.4426950408889634
    # an empty row has lse = -inf and no valid column: shift by 0 (its exp2 terms are 0 anyway)
    lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)
    glse = tl.load(GLSE + r, mask=r_ok, other=0.0) * scale
    gdot = glse
    if HAS_GDOT:
        gdot = tl.load(GDOT + r, mask=r_ok, other=0.0)
    return self0, self1, lab, lse2, glse, gdot


@triton.jit
def _col_stats(CLAB, CB, SB, PW, r, r_ok, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr,
               HAS_PW: tl.constexpr, BLOCK: tl.constexpr):
    """Per-contrast-row values: label, column bias, same-label bias, positive weight."""
    lab = r
    cb = tl.zeros([BLOCK], tl.float32)
    sb = tl.zeros([BLOCK], tl.float32)
    pw = tl.zeros([BLOCK], tl.float32)
    if HAS_LAB:
        lab = tl.load(CLAB + r, mask=r_ok, other=0)
    if HAS_CB:
        cb = tl.load(CB + r, mask=r_ok, other=0.0)
    if HAS_SB:
        sb = tl.load(SB + r, mask=r_ok, other=0.0)
    if HAS_PW:
        pw = tl.load(PW + r, mask=r_ok, other=0.0)
    return lab, cb, sb, pw


@triton.jit
def _rows_bwd_anchor(A, C, SELF, ALAB, CLAB, CB, SB, PW, LSE, GLSE, GDOT, DA,
                     M, L, D, stride_a, stride_c, stride_da, scale_log2, scale,
                     KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr,
                     HAS_PW: tl.constexpr, HAS_GDOT: tl.constexpr, SYM: tl.constexpr, PREC: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """``dA`` for a block of anchor rows; with ``SYM`` (A is C) the whole ``dX`` of those rows."""
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    m_ok = rm < M
    d_ok = rd < D
    a = tl.load(A + rm[:, None] * stride_a + rd[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    self0, self1, alab, lse2, glse, gdot = _row_stats(SELF, ALAB, LSE, GLSE, GDOT, rm, m_ok, scale,
                                                      KS, HAS_LAB, HAS_GDOT)
    if SYM:
        # these rows seen as contrast columns of the other anchors
        lab_r, cb_r, sb_r, pw_r = _col_stats(CLAB, CB, SB, PW, rm, m_ok, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, BLOCK_M)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, L, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        n_ok = rn < L
        c = tl.load(C + rn[:, None] * stride_c + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(a, tl.trans(c), input_precision=PREC)
        clab, cb, sb, pw = _col_stats(CLAB, CB, SB, PW, rn, n_ok, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, BLOCK_N)
        g = _grad_tile(s, m_ok[:, None], rn[None, :], n_ok[None, :], self0[:, None], self1[:, None],
                       alab[:, None], clab[None, :], cb[None, :], sb[None, :], pw[None, :], lse2[:, None],
                       glse[:, None], gdot[:, None], scale_log2, KS, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, HAS_GDOT)
        if SYM:
            # element (i, j) is also s_ji: anchor j (column stats of the tile, along axis 1) against
            # contrast row i (this block, along axis 0)
            # (distinct names: a variable re-assigned in the loop must keep its block shape)
            s0c, s1c, lab_c, lse2c, glsec, gdotc = _row_stats(SELF, ALAB, LSE, GLSE, GDOT, rn, n_ok, scale,
                                                              KS, HAS_LAB, HAS_GDOT)
            g += _grad_tile(s, n_ok[None, :], rm[:, None], m_ok[:, None], s0c[None, :], s1c[None, :],
                            clab[None, :], alab[:, None], cb_r[:, None], sb_r[:, None], pw_r[:, None],
                            lse2c[None, :], glsec[None, :], gdotc[None, :], scale_log2,
                            KS, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, HAS_GDOT)
        acc += tl.dot(g.to(c.dtype), c, input_precision=PREC)
    tl.store(DA + rm[:, None] * stride_da + rd[None, :], acc.to(DA.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])


@triton.jit
def _rows_bwd_contrast(A, C, SELF, ALAB, CLAB, CB, SB, PW, LSE, GLSE, GDOT, DC,
                       M, L, D, stride_a, stride_c, stride_dc, scale_log2, scale,
                       KS: tl.constexpr, HAS_LAB: tl.constexpr, HAS_CB: tl.constexpr, HAS_SB: tl.constexpr,
                       HAS_PW: tl.constexpr, HAS_GDOT: tl.constexpr, PREC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """``dC`` for a block of contrast rows: the transposed tiles ``S^T = C A^T`` over all anchors."""
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    n_ok = rn < L
    d_ok = rd < D
    c = tl.load(C + rn[:, None] * stride_c + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    clab, cb, sb, pw = _col_stats(CLAB, CB, SB, PW, rn, n_ok, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, M, BLOCK_M):
        rm = start + tl.arange(0, BLOCK_M)
        m_ok = rm < M
        a = tl.load(A + rm[:, None] * stride_a + rd[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
        st = tl.dot(c, tl.trans(a), input_precision=PREC)
        self0, self1, alab, lse2, glse, gdot = _row_stats(SELF, ALAB, LSE, GLSE, GDOT, rm, m_ok, scale,
                                                          KS, HAS_LAB, HAS_GDOT)
        gt = _grad_tile(st, m_ok[None, :], rn[:, None], n_ok[:, None], self0[None, :], self1[None, :],
                        alab[None, :], clab[:, None], cb[:, None], sb[:, None], pw[:, None], lse2[None, :],
                        glse[None, :], gdot[None, :], scale_log2, KS, HAS_LAB, HAS_CB, HAS_SB, HAS_PW, HAS_GDOT)
        acc += tl.dot(gt.to(a.dtype), a, input_precision=PREC)
    tl.store(DC + rn[:, None] * stride_dc + rd[None, :], acc.to(DC.dtype.element_ty),
             mask=n_ok[:, None] & d_ok[None, :])


# ----------------------------------------------------------------------------- launch


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _config(kind: str, m: int, block_d: int, dtype: torch.dtype, prec: str, device: torch.device):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for one kernel: fixed rules, no autotuning.

    Hopper-oriented guesses, checked only for what ptxas reports when compiling for sm_90 (no
    spills beyond a few hundred bytes, shared memory within 227 KB): 16-bit features 128 x 64
    forward tiles with 8 warps; float32 features 64 x 64 (a float32 block is twice the bytes and
    ``tf32x3`` keeps split copies); backward 64 x 64 (64 x 32 for D > 128). A block shrinks
    (down to 32 rows) while the grid would leave over half the SMs idle. The ``ieee`` FMA path uses 32 x 32
    tiles. The interpreter uses 16 x 16 tiles (speed of the CPU tests only).
    """
    if device.type != "cuda":
        return 16, 16, 1, 1
    half = dtype in (torch.float16, torch.bfloat16)
    stages = 3 if half else 2
    sms = _num_sms(device)

    def rows(largest: int) -> int:
        # the largest block that keeps at least half the SMs busy (short grids: the MoCo queries,
        # N=4096 SupCon), never below 32
        bm = largest
        while bm > 32 and 2 * cdiv(m, bm) < sms:
            bm //= 2
        return bm

    if prec == "ieee" and not half:
        return 32, 32, 4, 2
    if kind == "fwd":
        bm = rows(128 if half and block_d <= 128 else 64)
        return bm, 64, (8 if bm == 128 else 4), stages
    # backward kernels hold a (BLOCK, D) float32 accumulator besides the resident block
    bm = rows(64)
    bn = 64 if block_d <= 128 else 32
    return bm, bn, (4 if block_d <= 64 else 8), stages


def _opt(t: Optional[Tensor], dtype=None) -> Optional[Tensor]:
    if t is None:
        return None
    return t.contiguous() if dtype is None else t.to(dtype).contiguous()


def _forward(a: Tensor, c: Tensor, self_idx: Optional[Tensor], a_lab: Optional[Tensor], c_lab: Optional[Tensor],
             col_bias: Optional[Tensor], same_bias: Optional[Tensor], pos_weight: Optional[Tensor], scale: float,
             positives: bool) -> Tuple[Tensor, Tensor, Tensor]:
    m, d = a.shape
    l = c.shape[0]
    lse = torch.empty(m, device=a.device, dtype=torch.float32)
    # the kernel writes every row: no memset
    pdot = torch.empty(m if positives else 0, device=a.device, dtype=torch.float32)
    pcnt = torch.empty(m if positives else 0, device=a.device, dtype=torch.float32)
    block_d = max(16, next_pow2(d))
    prec = dot_precision(a.dtype)
    bm, bn, warps, stages = _config("fwd", m, block_d, a.dtype, prec, a.device)
    ks = 0 if self_idx is None else self_idx.shape[1]
    dummy = lse
    _rows_fwd[(cdiv(m, bm),)](
        a, c, dummy if self_idx is None else self_idx, dummy if a_lab is None else a_lab,
        dummy if c_lab is None else c_lab, dummy if col_bias is None else col_bias,
        dummy if same_bias is None else same_bias, dummy if pos_weight is None else pos_weight,
        lse, pdot if positives else dummy, pcnt if positives else dummy,
        m, l, d, a.stride(0), c.stride(0), scale * _LOG2E,
        KS=ks, HAS_LAB=a_lab is not None, HAS_CB=col_bias is not None, HAS_SB=same_bias is not None,
        HAS_PW=pos_weight is not None, POS=positives, PREC=prec,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d, num_warps=warps, num_stages=stages)
    return lse, pdot, pcnt


def _backward(a: Tensor, c: Tensor, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse: Tensor,
              g_lse: Tensor, g_dot: Optional[Tensor], scale: float, symmetric: bool, need_a: bool, need_c: bool
              ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    m, d = a.shape
    l = c.shape[0]
    block_d = max(16, next_pow2(d))
    ks = 0 if self_idx is None else self_idx.shape[1]
    dummy = lse
    prec = dot_precision(a.dtype)
    flags = dict(KS=ks, HAS_LAB=a_lab is not None, HAS_CB=col_bias is not None, HAS_SB=same_bias is not None,
                 HAS_PW=pos_weight is not None, HAS_GDOT=g_dot is not None, PREC=prec)
    common = (dummy if self_idx is None else self_idx, dummy if a_lab is None else a_lab,
              dummy if c_lab is None else c_lab, dummy if col_bias is None else col_bias,
              dummy if same_bias is None else same_bias, dummy if pos_weight is None else pos_weight,
              lse, g_lse, dummy if g_dot is None else g_dot)
    da = dc = None
    if symmetric or need_a:
        da = torch.empty_like(a)
        bm, bn, warps, stages = _config("bwd", m, block_d, a.dtype, prec, a.device)
        _rows_bwd_anchor[(cdiv(m, bm),)](
            a, c, *common, da, m, l, d, a.stride(0), c.stride(0), da.stride(0), scale * _LOG2E, scale,
            SYM=symmetric, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d, num_warps=warps, num_stages=stages, **flags)
    if need_c and not symmetric:
        dc = torch.empty_like(c)
        bn, bm, warps, stages = _config("bwd", l, block_d, a.dtype, prec, a.device)
        _rows_bwd_contrast[(cdiv(l, bn),)](
            a, c, *common, dc, m, l, d, a.stride(0), c.stride(0), dc.stride(0), scale * _LOG2E, scale,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d, num_warps=warps, num_stages=stages, **flags)
    return da, dc


# torch.library custom ops: opaque to torch.compile (the Triton launches are not traced) and
# the autograd formula is the hand-written recomputing backward.
@torch.library.custom_op("tailwise::contrastive_rows_fwd", mutates_args=())
def _fwd_op(anchors: Tensor, contrast: Tensor, self_idx: Optional[Tensor], a_lab: Optional[Tensor],
            c_lab: Optional[Tensor], col_bias: Optional[Tensor], same_bias: Optional[Tensor],
            pos_weight: Optional[Tensor], scale: float, positives: bool, symmetric: bool
            ) -> Tuple[Tensor, Tensor, Tensor]:
    # symmetric (anchors is contrast) only changes the backward
    return _forward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, scale, positives)


@_fwd_op.register_fake
def _(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, scale, positives, symmetric):
    m = anchors.shape[0]
    k = m if positives else 0
    f = torch.float32
    return anchors.new_empty(m, dtype=f), anchors.new_empty(k, dtype=f), anchors.new_empty(k, dtype=f)


@torch.library.custom_op("tailwise::contrastive_rows_bwd", mutates_args=())
def _bwd_op(anchors: Tensor, contrast: Tensor, self_idx: Optional[Tensor], a_lab: Optional[Tensor],
            c_lab: Optional[Tensor], col_bias: Optional[Tensor], same_bias: Optional[Tensor],
            pos_weight: Optional[Tensor], lse: Tensor, g_lse: Tensor, g_dot: Optional[Tensor], scale: float,
            symmetric: bool, need_a: bool, need_c: bool) -> Tuple[Tensor, Tensor]:
    da, dc = _backward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse,
                       g_lse, g_dot, scale, symmetric, need_a, need_c)
    # custom ops return tensors: an empty one stands for "no gradient"
    return (anchors.new_empty(0) if da is None else da), (contrast.new_empty(0) if dc is None else dc)


@_bwd_op.register_fake
def _(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse, g_lse, g_dot, scale,
      symmetric, need_a, need_c):
    da = anchors.new_empty(anchors.shape) if (symmetric or need_a) else anchors.new_empty(0)
    dc = contrast.new_empty(contrast.shape) if (need_c and not symmetric) else contrast.new_empty(0)
    return da, dc


def _setup_context(ctx, inputs, output):
    anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, scale, positives, symmetric = inputs
    ctx.save_for_backward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, output[0])
    ctx.scale = scale
    ctx.positives = positives
    ctx.symmetric = symmetric


def _backward_formula(ctx, g_lse, g_dot, g_cnt):
    anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse = ctx.saved_tensors
    symmetric = ctx.symmetric
    need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if g_lse is None:
        g_lse = torch.zeros_like(lse)
    if not ctx.positives or g_dot is None or g_dot.numel() == 0:
        g_dot = None
    da, dc = _bwd_op(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse,
                     g_lse.contiguous(), None if g_dot is None else g_dot.contiguous(), ctx.scale,
                     symmetric, need_a, need_c)
    if symmetric:  # the one tensor was passed as both arguments: its whole gradient once
        return da, None, None, None, None, None, None, None, None, None, None
    return ((da if need_a else None), (dc if need_c else None), None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("tailwise::contrastive_rows_fwd", _backward_formula, setup_context=_setup_context)


class _EagerRows(torch.autograd.Function):
    """The custom op's autograd without the custom op, for eager calls: ``torch.library``
    dispatch costs host time per forward and per backward (see ``_softmax_ce_triton._EagerCE``);
    ``torch.compile`` still sees the opaque custom op (:func:`contrastive_rows` picks it while
    tracing). Same launches, same saved tensors, same backward formula."""

    @staticmethod
    def forward(ctx, anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, scale, positives,
                symmetric):
        lse, pdot, pcnt = _forward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight,
                                   scale, positives)
        ctx.save_for_backward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse)
        ctx.scale, ctx.positives, ctx.symmetric = scale, positives, symmetric
        ctx.mark_non_differentiable(pcnt)
        # no zero tensors for gradients that never come (pcnt; pdot without positives)
        ctx.set_materialize_grads(False)
        return lse, pdot, pcnt

    @staticmethod
    def backward(ctx, g_lse, g_dot, _g_cnt):
        anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse = ctx.saved_tensors
        symmetric = ctx.symmetric
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if g_lse is None and g_dot is None:
            return (None,) * 11
        if g_lse is None:
            g_lse = torch.zeros_like(lse)
        if not ctx.positives or g_dot is None or g_dot.numel() == 0:
            g_dot = None
        da, dc = _backward(anchors, contrast, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight, lse,
                           g_lse.contiguous(), None if g_dot is None else g_dot.contiguous(), ctx.scale,
                           symmetric, need_a, need_c)
        if symmetric:  # the one tensor was passed as both arguments: its whole gradient once
            return (da,) + (None,) * 10
        return ((da if need_a else None), (dc if need_c else None)) + (None,) * 9


def _label_ids(a_lab: Tensor, c_lab: Tensor, symmetric: bool) -> Tuple[Tensor, Tensor]:
    """int32 ids with exactly the equalities of the labels (the kernel only compares them): each
    label's first index in the sorted labels of both sets. int64 label tiles would cost registers
    in every tile; two launches (sort, ``searchsorted``), no host read, fixed shapes.

    ``symmetric``: the anchors are the contrast rows, so are their labels (the symmetric backward
    reads the anchor labels of contrast rows already): the contrast labels alone.
    """
    both = c_lab.long() if symmetric else torch.cat([a_lab.long(), c_lab.long()])
    ids = torch.searchsorted(torch.sort(both).values, both, out_int32=True)
    if symmetric:
        return ids, ids
    m = a_lab.shape[0]
    return ids[:m], ids[m:]


def contrastive_rows(anchors: Tensor, contrast: Tensor, scale: float, self_idx: Optional[Tensor] = None,
                     a_lab: Optional[Tensor] = None, c_lab: Optional[Tensor] = None,
                     col_bias: Optional[Tensor] = None, same_bias: Optional[Tensor] = None,
                     pos_weight: Optional[Tensor] = None, positives: bool = False, symmetric: bool = False,
                     chunk_size: Optional[int] = None):
    """Triton implementation of op ``contrastive_rows`` (same signature and results as the torch one).

    Cases outside the kernel run the torch reference: empty inputs, float64 (the kernel computes
    in float32), ``D > 256`` (``D > 128`` for float32 features) and more than two excluded
    columns per row.
    """
    m, d = anchors.shape
    l = contrast.shape[0]
    ks = 0 if self_idx is None else (1 if self_idx.dim() == 1 else self_idx.shape[1])
    half = feature_dtype()
    if half == torch.bfloat16 and triton_interpreter():
        half = None  # the interpreter's tl.dot misreads bfloat16 operands (numpy has no bfloat16)
    dt = half if half is not None else torch.float32
    if (m == 0 or l == 0 or d > MAX_D[dt] or ks > 2 or anchors.dtype == torch.float64
            or contrast.dtype == torch.float64):
        return _rows_torch(anchors, contrast, scale, self_idx, a_lab, c_lab, col_bias, same_bias, pos_weight,
                           positives, symmetric, chunk_size)
    symmetric = bool(symmetric) and m == l
    c = contrast.to(dt).contiguous()
    # symmetric: the contrast tensor is passed as both arguments and gets the whole gradient
    a = c if symmetric else anchors.to(dt).contiguous()
    if positives and (a_lab is None or c_lab is None):
        raise ValueError("contrastive_rows: positives=True needs a_lab and c_lab")
    sidx = None if self_idx is None else self_idx.reshape(m, ks).to(torch.int32).contiguous()
    if a_lab is not None and c_lab is not None:
        a_lab, c_lab = _label_ids(a_lab, c_lab, symmetric)
    elif a_lab is not None or c_lab is not None:
        raise ValueError("contrastive_rows: pass both a_lab and c_lab, or neither")
    args = (a, c, sidx, a_lab, c_lab, _opt(col_bias, torch.float32), _opt(same_bias, torch.float32),
            _opt(pos_weight, torch.float32), float(scale), bool(positives), symmetric)
    if torch.compiler.is_compiling():
        lse, pdot, pcnt = _fwd_op(*args)
    else:
        lse, pdot, pcnt = _EagerRows.apply(*args)
    lse = lse.to(anchors.dtype)
    if not positives:
        return lse, None, None
    return lse, pdot.to(anchors.dtype), pcnt.to(anchors.dtype)
