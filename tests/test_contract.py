"""The contract every registry loss keeps, checked once for all of them.

Driven by the registry (``tailwise.list_losses()``) and the per-family sample inputs and
capability flags in ``tests/specs/`` (:class:`tests.specs.LossSpec`). Each check runs for every
registry name with a spec on every available device (``cpu``; ``cuda`` when present, skipped
otherwise):

* reductions (``"sum"`` of ``"none"`` equals ``"sum"``), empty batch (0 with a ``grad_fn``),
  bf16 autocast (finite, float32 result), functional == module (value and gradient),
  ``state_dict`` round trip;
* ``torch.compile(fullgraph=True)`` traces the module forward and the functional (CPU; the
  ``aot_eager`` backend traces forward and backward without paying for code generation);
* CUDA only: CPU == CUDA (value and gradient), zero host syncs per forward+backward
  (``torch.cuda.set_sync_debug_mode("error")``), CUDA-graph capture of forward+backward.

A registry name without a spec fails :func:`test_every_registry_name_has_a_spec` (one test, so
a family whose specs land later shows up as one failure, not dozens).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

import tailwise
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from tailwise._validation import _device_paths
from tests.specs import all_specs

SPECS = all_specs()
REGISTRY = tailwise.list_losses()
NAMES = [n for n in sorted(SPECS) if n in REGISTRY]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
N = 6  # small batch: every check is about the contract, not about speed


def _inputs(spec, n, device, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return spec.make(max(n, spec.min_batch) if n else 0, torch.device(device), dtype, gen)


def _module(name, spec, device, **overrides):
    kwargs = dict(spec.module_kwargs)
    kwargs.update(overrides)
    return tailwise.build_loss(name, **kwargs).to(device)


def _leaves(args, kwargs):
    return [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor) and t.requires_grad]


def _grads(loss, args, kwargs):
    leaves = _leaves(args, kwargs)
    return torch.autograd.grad(loss, leaves, allow_unused=True) if leaves else ()


def _close(a, b, *, rtol=1e-4, atol=1e-5, what=""):
    torch.testing.assert_close(a.detach().float().cpu(), b.detach().float().cpu(), rtol=rtol, atol=atol,
                               equal_nan=False, msg=lambda m: f"{what}: {m}")


def test_every_registry_name_has_a_spec():
    missing = sorted(set(REGISTRY) - set(SPECS))
    unknown = sorted(set(SPECS) - set(REGISTRY))
    assert not missing, f"registry names without a LossSpec in tests/specs/: {missing}"
    assert not unknown, f"specs for names that are not registered: {unknown}"


def _functional(spec):
    """The spec's functional with its extra keyword arguments, or None (stateful losses whose
    functional takes state the module keeps, e.g. a per-sample tracker)."""
    if spec.functional is None:
        return None
    return lambda *a, **k: spec.functional(*a, **k, **spec.functional_kwargs)


def _calls(name, spec, device):
    """The module and, when the spec names one, the functional."""
    fn = _functional(spec)
    return [_module(name, spec, device)] + ([fn] if fn is not None else [])


# ----------------------------------------------------------------------------- every device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_reductions(name, device):
    spec = SPECS[name]
    args, kwargs = _inputs(spec, N, device)
    out = {}
    for r in spec.reductions:
        # a loss with only a mean may not take a reduction argument at all
        extra = {"reduction": r} if len(spec.reductions) > 1 else {}
        loss = _module(name, spec, device, **extra)(*args, **kwargs)
        assert loss.dtype == torch.float32, (r, loss.dtype)
        assert torch.isfinite(loss).all(), (r, loss)
        assert loss.grad_fn is not None, r
        out[r] = loss
    for r in ("mean", "sum"):
        if r in out:
            assert out[r].dim() == 0, (r, out[r].shape)
    if "none" in out and "sum" in out:
        assert out["none"].dim() >= 1
        _close(out["none"].sum(), out["sum"], what="sum of reduction='none' vs reduction='sum'")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, device):
    spec = SPECS[name]
    if not spec.empty_batch:
        pytest.skip(f"{name} needs a batch of at least {spec.min_batch}")
    for call in _calls(name, spec, device):
        args, kwargs = _inputs(spec, 0, device)
        loss = call(*args, **kwargs)
        assert loss.dim() == 0 and loss.item() == 0.0, loss
        assert loss.grad_fn is not None
        loss.backward()
        for t in _leaves(args, kwargs):
            assert t.grad is not None and t.grad.shape == t.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast(name, device):
    spec = SPECS[name]
    if not spec.bf16:
        pytest.skip(f"{name} does not run under bf16 autocast")
    args, kwargs = _inputs(spec, N, device, dtype=torch.bfloat16)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = _module(name, spec, device)(*args, **kwargs)
    assert loss.dtype == torch.float32, loss.dtype
    assert torch.isfinite(loss).all(), loss
    for g in _grads(loss, args, kwargs):
        assert g is None or torch.isfinite(g).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_functional_matches_module(name, device):
    spec = SPECS[name]
    if spec.functional is None:
        pytest.skip(f"{name}: the spec names no functional")
    args, kwargs = _inputs(spec, N, device)
    mod_loss = _module(name, spec, device)(*args, **kwargs)
    fn_loss = spec.functional(*args, **kwargs, **spec.functional_kwargs)
    _close(fn_loss, mod_loss, what="functional vs module")
    for a, b in zip(_grads(fn_loss, args, kwargs), _grads(mod_loss, args, kwargs)):
        _close(a, b, what="gradient, functional vs module")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, device):
    spec = SPECS[name]
    a = _module(name, spec, device)
    for seed in (1, 2):  # stateful modules move their statistics
        args, kwargs = _inputs(spec, N, device, seed=seed)
        a(*args, **kwargs)
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(1.25)  # a learnt parameter (e.g. BMC's noise_sigma) travels too
    b = _module(name, spec, device)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for (k, x), (k2, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2
        assert torch.equal(x, y) or (x.is_floating_point() and torch.equal(x.isnan(), y.isnan())), k
    a.eval()
    b.eval()
    args, kwargs = _inputs(spec, N, device, seed=3)
    _close(a(*args, **kwargs), b(*args, **kwargs), rtol=0, atol=0, what="after load_state_dict")


@pytest.mark.parametrize("name", NAMES)
def test_fullgraph_compile(name):
    """``torch.compile(fullgraph=True)`` traces the module's and the functional's forward and backward."""
    spec = SPECS[name]
    if not spec.compile_fullgraph:
        pytest.skip(f"{name} is declared not to trace with fullgraph=True")
    torch._dynamo.reset()
    args, kwargs = _inputs(spec, N, "cpu")
    eager_mod = _module(name, spec, "cpu")
    mod = copy.deepcopy(eager_mod)
    want = eager_mod(*args, **kwargs)
    got = torch.compile(mod, fullgraph=True, backend="aot_eager")(*args, **kwargs)
    _close(got, want, what="compiled module vs eager")
    for a, b in zip(_grads(got, args, kwargs), _grads(want, args, kwargs)):
        _close(a, b, what="compiled module gradient vs eager")

    functional = _functional(spec)
    if functional is not None:
        want = functional(*args, **kwargs)  # eager first: it fills per-device caches, as a warm-up step would
        got = torch.compile(functional, fullgraph=True, backend="aot_eager")(*args, **kwargs)
        _close(got, want, what="compiled functional vs eager")
        _grads(got, args, kwargs)


class _RefuseHostReadsPython(TorchFunctionMode):
    """Python-level reads of tensor values: ``item``, ``tolist``, ``bool``/``int``/``float``/index
    of a tensor, ``numpy``; and ``prod`` of a tensor that needs its gradient (the backward of
    ``prod`` counts the zeros on the host, a sync on CUDA). It also marks ``F.one_hot`` with an
    explicit class count, whose CPU kernel checks the label range on the host but whose CUDA
    kernel does not (it fails on the device instead)."""

    _REFUSED = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"}

    def __init__(self, trusted):
        super().__init__()
        self.trusted = trusted

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self._REFUSED:
            raise AssertionError(f"host read of tensor values: {name}")
        if (name == "prod" and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad
                and torch.is_grad_enabled()):
            raise AssertionError("host read of tensor values: the backward of prod (a zero count on the host)")
        if name == "one_hot" and kwargs.get("num_classes", args[1] if len(args) > 1 else -1) >= 0:
            self.trusted[0] += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.trusted[0] -= 1
        return func(*args, **kwargs)


class _RefuseHostReadsATen(TorchDispatchMode):
    """The aten ops that read tensor values on the host or copy host data to the device, seen at
    the dispatcher, so they are caught in the backward pass too: ``_local_scalar_dense`` (every
    ``item``), ``nonzero`` (boolean-mask indexing, ``argwhere``), ``masked_select``,
    ``bincount``, ``unique``, ``repeat_interleave`` without ``output_size``, and
    ``lift_fresh`` (a tensor built from Python data inside the loss: a host-to-device copy on
    CUDA on every call)."""

    _REFUSED = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "bincount", "_unique",
                "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive", "lift_fresh",
                "lift_fresh_copy"}

    def __init__(self, trusted):
        super().__init__()
        self.trusted = trusted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.trusted[0]:
            name = func.overloadpacket.__name__
            if name in self._REFUSED:
                raise AssertionError(f"host read of tensor values: aten.{name}")
            if name in ("index", "index_put", "index_put_", "_index_put_impl_") and len(args) > 1:
                if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
                    raise AssertionError("host read of tensor values: boolean-mask indexing")
            if name == "repeat_interleave" and func == torch.ops.aten.repeat_interleave.Tensor \
                    and kwargs.get("output_size") is None:
                raise AssertionError("host read of tensor values: repeat_interleave without output_size")
        return func(*args, **kwargs)


@contextlib.contextmanager
def _no_host_reads(monkeypatch=None):
    """A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: a torch-function mode for
    Python-level reads and a dispatch mode for aten-level ones (not a monkeypatch of
    ``torch.Tensor``, which would change how CPython sees every tensor afterwards)."""
    trusted = [0]
    with _RefuseHostReadsPython(trusted), _RefuseHostReadsATen(trusted):
        yield


def test_no_host_reads_catches_host_reads(monkeypatch):
    x = torch.randn(5)
    w = torch.randn(5, requires_grad=True)
    idx = torch.tensor([0, 1])
    for read in (lambda: bool(x.sum() > 0), lambda: x[x > 0], lambda: x.max().item(), lambda: float(x.sum()),
                 lambda: torch.nonzero(x), lambda: x.nonzero(), lambda: torch.bincount(x.long().abs()),
                 lambda: x.tolist(), lambda: torch.repeat_interleave(x, torch.ones(5, dtype=torch.long)),
                 lambda: int(x.long().sum()), lambda: range(10)[x.long().sum()],
                 lambda: x + torch.tensor(2.0),  # Python data to a tensor: a host-to-device copy on CUDA
                 lambda: w.prod(),  # its backward counts zeros on the host
                 lambda: _BackwardRead.apply(w).sum().backward()):
        with _no_host_reads(monkeypatch):
            with pytest.raises(AssertionError, match="host read"):
                read()
    idx = torch.tensor([0, 1])
    with _no_host_reads(monkeypatch):  # what stays allowed: slicing, integer-tensor indexing, one_hot
        x[1:3]
        x[idx]
        torch.repeat_interleave(x, torch.ones(5, dtype=torch.long), output_size=5)
        torch.nn.functional.one_hot(idx, 3)
        w.detach().prod()
        (w * 2).sum().backward()


class _BackwardRead(torch.autograd.Function):
    """A backward that reads a value on the host: caught although no Python code of the loss runs."""

    @staticmethod
    def forward(ctx, w):
        return w * 1

    @staticmethod
    def backward(ctx, g):
        return g.nonzero().new_ones(g.shape, dtype=g.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_device_paths_match_and_read_nothing_on_the_host(name, monkeypatch):
    """The accelerator code paths (device-side asserts, masking), taken on CPU: same value and
    gradient as the eager CPU paths, and no read of tensor values on the host in forward or
    backward (module and functional, after one warm-up call that fills per-device caches)."""
    spec = SPECS[name]
    args, kwargs = _inputs(spec, N, "cpu")
    mod = _module(name, spec, "cpu")
    ref_mod = copy.deepcopy(mod)

    functional = _functional(spec)
    pairs = [(mod, ref_mod)] + ([(functional, functional)] if functional is not None else [])
    for fn, ref in pairs:
        ref(*args, **kwargs)  # the same number of calls on both sides: stateful modules update
        want = ref(*args, **kwargs)
        want_grads = _grads(want, args, kwargs)
        with _device_paths():
            fn(*args, **kwargs)  # warm-up
            with _no_host_reads(monkeypatch):
                got = fn(*args, **kwargs)
                got_grads = _grads(got, args, kwargs)
        _close(got, want, what="device paths vs eager CPU paths")
        for a, b in zip(got_grads, want_grads):
            _close(a, b, what="gradient, device paths vs eager CPU paths")


class _RefuseHostDataPython(TorchFunctionMode):
    """``torch.tensor``/``as_tensor``/``asarray`` of Python data straight onto a device (the
    copy happens below the dispatcher, so only the Python call shows it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in ("tensor", "as_tensor", "asarray") and args \
                and not isinstance(args[0], torch.Tensor) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type != "cpu":
            raise AssertionError(f"host-to-device copy: torch.{func.__name__} of Python data inside the loss")
        return func(*args, **kwargs)


class _RefuseHostDataATen(TorchDispatchMode):
    """With the loss on the ``meta`` device standing in for an accelerator: refuse every copy of
    CPU data to it and every tensor built from Python data (each is a host-to-device copy, a
    synchronising ``cudaMemcpy`` from pageable memory, on every call on CUDA)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in ("lift_fresh", "lift_fresh_copy"):
            raise AssertionError("host-to-device copy: a tensor built from Python data inside the loss")
        if name in ("_to_copy", "copy_", "_copy_from", "_copy_from_and_resize"):
            devices = {a.device.type for a in args if isinstance(a, torch.Tensor)}
            to = kwargs.get("device")
            if "cpu" in devices and ("meta" in devices or (to is not None and torch.device(to).type == "meta")):
                shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
                raise AssertionError(f"host-to-device copy of a CPU tensor {shapes} inside the loss")
        return func(*args, **kwargs)


@contextlib.contextmanager
def _refuse_host_to_device():
    with _RefuseHostDataPython(), _RefuseHostDataATen():
        yield


def _to_meta(args, kwargs):
    def move(t):
        return t.detach().to("meta").requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}


@pytest.mark.parametrize("name", NAMES)
def test_no_host_to_device_copies_per_call(name):
    """On a device that is not the CPU (``meta`` here, so CI needs no GPU), forward and backward
    copy no host data to the device after a warm-up call: class statistics live in buffers or in
    the per-device cache, and scalars stay Python numbers."""
    spec = SPECS[name]
    mod = _module(name, spec, "meta")
    functional = _functional(spec)
    for fn in [mod] + ([functional] if functional is not None else []):
        args, kwargs = _to_meta(*_inputs(spec, N, "cpu", seed=5))
        fn(*args, **kwargs)  # warm-up: fills the per-device caches
        args, kwargs = _to_meta(*_inputs(spec, N, "cpu", seed=4))
        with _refuse_host_to_device():
            loss = fn(*args, **kwargs)
            _grads(loss, args, kwargs)


def test_no_host_to_device_copies_catches_copies():
    x = torch.randn(3, device="meta", requires_grad=True)
    for copy_in in (lambda: x + torch.tensor([1.0, 2.0, 3.0]).to(x.device), lambda: x * torch.tensor(2.0, device="meta"),
                    lambda: x + torch.ones(3).to(device=x.device, dtype=x.dtype)):
        with _refuse_host_to_device(), pytest.raises(AssertionError, match="host-to-device"):
            copy_in()
    with _refuse_host_to_device():  # what stays allowed: Python scalars, tensors made on the device
        (x * 2.0 + torch.ones(3, device="meta")).sum().backward()


# ----------------------------------------------------------------------------- CUDA only
def _cuda_args(args, kwargs):
    def move(t):
        if not isinstance(t, torch.Tensor):
            return t
        return t.detach().cuda().requires_grad_(t.requires_grad)
    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}


@CUDA
@pytest.mark.parametrize("name", NAMES)
def test_cpu_matches_cuda(name):
    spec = SPECS[name]
    args, kwargs = _inputs(spec, N, "cpu")
    cargs, ckwargs = _cuda_args(args, kwargs)
    makers = [lambda dev: _module(name, spec, dev)]
    if spec.functional is not None:
        makers.append(lambda dev: _functional(spec))
    for make in makers:
        lc = make("cpu")(*args, **kwargs)
        lg = make("cuda")(*cargs, **ckwargs)
        _close(lg, lc, rtol=1e-4, atol=1e-5, what="CUDA vs CPU value")
        for a, b in zip(_grads(lg, cargs, ckwargs), _grads(lc, args, kwargs)):
            if a is not None:
                _close(a, b, rtol=1e-4, atol=1e-5, what="CUDA vs CPU gradient")


@CUDA
@pytest.mark.parametrize("name", NAMES)
def test_no_host_sync_cuda(name):
    """Forward + backward make no device-to-host synchronisation (after one warm-up call)."""
    spec = SPECS[name]
    mod = _module(name, spec, "cuda")

    def step(fn):
        args, kwargs = _inputs(spec, N, "cuda", seed=4)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(*args, **kwargs).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    for fn in [mod] + ([_functional(spec)] if spec.functional is not None else []):
        args, kwargs = _inputs(spec, N, "cuda", seed=5)
        fn(*args, **kwargs).backward()  # warm-up: lazy CUDA init, per-device caches of class_counts
        step(fn)


@CUDA
@pytest.mark.parametrize("name", NAMES)
def test_cuda_graph_capture(name):
    """Forward + backward capture into one CUDA graph and replay to the eager result."""
    spec = SPECS[name]
    mod = _module(name, spec, "cuda")
    if spec.stateful:
        mod.eval()  # frozen statistics: every replay computes the same loss as eager
    args, kwargs = _inputs(spec, N, "cuda")
    leaves = _leaves(args, kwargs)
    want = mod(*args, **kwargs)
    want_grads = torch.autograd.grad(want, leaves)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            for t in leaves:
                t.grad = None
            mod(*args, **kwargs).backward()
    torch.cuda.current_stream().wait_stream(stream)
    for t in leaves:
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = mod(*args, **kwargs)
        loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    _close(loss, want, what="graph replay vs eager")
    for t, g in zip(leaves, want_grads):
        _close(t.grad, g, what="graph replay gradient vs eager")
