"""Op ``contrastive_rows``: dispatch, precision policy, tracing, and the Triton kernel's suites.

* On CPU: the interpreter suite ``interp_kernels_contrastive.py`` runs in a fresh process with
  ``TRITON_INTERPRET=1`` (it must be set before Triton is imported, and a process-wide setting
  would turn the real GPU kernels of other tests into interpreted ones).
* On CUDA (skipped without a GPU): the compiled kernel against the torch path, under
  ``torch.compile(fullgraph=True)`` and in a CUDA graph.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tailwise.functional import dcl_loss, info_nce_loss, supcon_loss
from tailwise.kernels import KernelBackendError, backend, list_ops
from tailwise.kernels.contrastive_lse import contrastive_rows, dot_precision

HERE = pathlib.Path(__file__).resolve().parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _unit(*shape, dtype=torch.float32, device="cpu"):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1).to(device=device, dtype=dtype)


def test_op_is_registered_with_both_backends():
    op = list_ops()["contrastive_rows"]
    assert op["backends"] == ["torch", "triton"]
    assert {"supcon", "info_nce", "dcl", "paco", "bcl", "tsc", "rescom"} <= set(op["losses"])


def test_triton_interpreter_suite():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", TAILWISE_KERNELS="auto")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        str(HERE / "interp_kernels_contrastive.py")],
                       cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1500)
    tail = (r.stdout[-8000:] + "\n" + r.stderr[-4000:])
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and " skipped" not in r.stdout.splitlines()[-1], tail


def test_dot_precision_follows_torch_float32_matmul_setting(monkeypatch):
    mm = torch.backends.cuda.matmul
    monkeypatch.delenv("TAILWISE_CONTRASTIVE_FP32", raising=False)
    assert dot_precision(torch.bfloat16) == "tf32"  # half operands: tensor cores, the flag is unused
    if not hasattr(mm, "fp32_precision"):
        pytest.skip("torch < 2.9: legacy allow_tf32 only")
    old = mm.fp32_precision
    try:
        # TF32 not allowed: float32 accuracy, emulated on tensor cores (never plain TF32)
        mm.fp32_precision = "ieee"
        assert dot_precision(torch.float32) == "tf32x3"
        mm.fp32_precision = "tf32"
        assert dot_precision(torch.float32) == "tf32"
        monkeypatch.setenv("TAILWISE_CONTRASTIVE_FP32", "ieee")
        assert dot_precision(torch.float32) == "ieee"
    finally:
        mm.fp32_precision = old


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    z = _unit(6, 2, 8)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    with backend("triton"), pytest.raises(KernelBackendError, match="CPU|Triton"):
        supcon_loss(z, y)
    # auto keeps the torch path on CPU
    assert torch.isfinite(supcon_loss(z, y))


@pytest.mark.parametrize("name", ["supcon", "simclr", "info_nce_queue", "dcl", "op"])
def test_torch_path_traces_fullgraph(name):
    torch._dynamo.reset()
    y = torch.tensor([0, 1, 0, 1, 2, 2, 3])
    queue = _unit(5, 8)
    fns = {
        "supcon": lambda z: supcon_loss(z, y, normalize=True),
        "simclr": lambda z: supcon_loss(z, normalize=True, contrast_mode="one"),
        "info_nce_queue": lambda z: info_nce_loss(z, queue, normalize=True),
        "dcl": lambda z: dcl_loss(z, normalize=True),
        "op": lambda z: contrastive_rows(z[:, 0], z[:, 1], 2.0, self_idx=torch.arange(7),
                                         a_lab=y, c_lab=y, positives=True, chunk_size=3)[1].sum(),
    }
    z = _unit(7, 2, 8).requires_grad_()
    fn = fns[name]
    eager = fn(z)
    compiled = torch.compile(fn, fullgraph=True, backend="eager")(z)
    torch.testing.assert_close(compiled, eager)
    compiled.backward()
    assert torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------------------- CUDA


def _cuda_pair(fn, *inputs, tol_value, tol_grad):
    outs = []
    for kernel in ("torch", "triton"):
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        with backend(kernel):
            loss = fn(*leaves)
        loss.backward()
        outs.append((loss.detach().float(), [x.grad.float() for x in leaves]))
    (ref, ref_g), (out, g) = outs
    torch.testing.assert_close(out, ref, **tol_value)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, **tol_grad)


@cuda
@pytest.mark.parametrize("n,v,d", [(300, 2, 128), (257, 3, 61), (1000, 1, 256)])
def test_cuda_fp32_matches_torch(n, v, d):
    pytest.importorskip("triton")
    old = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        z = _unit(n, v, d, device="cuda")
        y = torch.randint(0, 10, (n,), device="cuda")
        tol_v, tol_g = dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-4)
        _cuda_pair(lambda z: supcon_loss(z, y), z, tol_value=tol_v, tol_grad=tol_g)
        _cuda_pair(lambda z: supcon_loss(z, y, contrast_mode="one"), z, tol_value=tol_v, tol_grad=tol_g)
        if v == 2:
            _cuda_pair(lambda z: info_nce_loss(z, _unit(97, d, device="cuda")), z, tol_value=tol_v, tol_grad=tol_g)
            _cuda_pair(lambda z: dcl_loss(z), z, tol_value=tol_v, tol_grad=tol_g)
    finally:
        torch.backends.cuda.matmul.fp32_precision = old


@cuda
def test_cuda_tf32_and_bf16_close_to_torch():
    pytest.importorskip("triton")
    z = _unit(513, 2, 128, device="cuda")
    y = torch.randint(0, 10, (513,), device="cuda")
    old = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        _cuda_pair(lambda z: supcon_loss(z, y), z, tol_value=dict(rtol=1e-3, atol=1e-3),
                   tol_grad=dict(rtol=1e-2, atol=1e-3))
    finally:
        torch.backends.cuda.matmul.fp32_precision = old
    _cuda_pair(lambda z: supcon_loss(z, y), z.bfloat16(), tol_value=dict(rtol=1e-2, atol=1e-2),
               tol_grad=dict(rtol=5e-2, atol=5e-3))


@cuda
def test_cuda_compile_graph_capture_and_no_sync():
    pytest.importorskip("triton")
    z = _unit(256, 2, 128, device="cuda").requires_grad_()
    y = torch.randint(0, 10, (256,), device="cuda")
    with backend("triton"):
        eager = supcon_loss(z, y)
        compiled = torch.compile(lambda z: supcon_loss(z, y, normalize=True), fullgraph=True)(z)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        # kernels and their launch are sync-free: capture forward + backward in a CUDA graph
        static = z.detach().clone().requires_grad_()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                static.grad = None
                supcon_loss(static, y, normalize=True).backward()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        static.grad = None
        with torch.cuda.graph(g):
            loss = supcon_loss(static, y, normalize=True)
            loss.backward()
        g.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(loss, eager.detach(), rtol=1e-5, atol=1e-5)
