"""``torch.distributed`` helpers shared by every batch-coupled or stateful loss.

* :func:`all_gather_with_grad` concatenates every rank's shard along dim 0 (shards may have
  different lengths) and, unlike ``torch.distributed.all_gather``, lets gradients flow back to
  the local shard. In backward the gradient of the gathered tensor is summed over ranks and the
  local slice is returned: rank ``r``'s input receives ``sum_q dL_q / dx_r``. After DDP averages
  parameter gradients over the ``W`` ranks this equals the gradient of the mean of the per-rank
  losses, which for per-sample-mean losses on equal shards is the single-process full-batch
  gradient.
* :func:`all_gather_no_grad` is the same without autograd (labels, targets, statistics).
* :func:`all_reduce_sum` / :func:`all_reduce_mean` for running statistics.

Every function is a no-op (returns its input) when ``torch.distributed`` is unavailable or not
initialised, so losses call them unconditionally.
"""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_dist_initialized",
    "get_world_size",
    "get_rank",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "gather_sizes",
    "all_reduce_sum",
    "all_reduce_mean",
]


def is_dist_initialized() -> bool:
    """True when ``torch.distributed`` is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def gather_sizes(n: int, device=None) -> List[int]:
    """Every rank's local length ``n`` (``[n]`` outside distributed).

    The sizes must be known on the host (they shape the gathered tensor), so this is the one
    host synchronisation of a variable-size gather: a fill kernel rather than a host->device
    copy, and one read of all sizes rather than one per rank.
    """
    if not is_dist_initialized():
        return [int(n)]
    t = torch.full((1,), int(n), dtype=torch.int64, device=device)
    out = torch.zeros(get_world_size(), dtype=torch.int64, device=t.device)
    dist.all_gather(list(out.chunk(get_world_size())), t)
    return [int(x) for x in out.tolist()]


def _gather(tensor: Tensor, sizes: List[int]) -> Tensor:
    """All-gather along dim 0, padding shards to the longest one (gloo/NCCL need equal shapes)."""
    longest = max(sizes)
    tensor = tensor.contiguous()
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0],) + tuple(tensor.shape[1:]))
        tensor = torch.cat([tensor, pad], 0)
    buffers = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(buffers, tensor)
    return torch.cat([b[:n] for b, n in zip(buffers, sizes)], 0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: List[int]) -> Tensor:
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _gather(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop], None


def all_gather_with_grad(tensor: Tensor, *, return_offset: bool = False):
    """Concatenate every rank's ``tensor`` along dim 0, differentiably w.r.t. the local shard.

    Shards may differ in length (no ``drop_last=True`` needed). With ``return_offset=True`` also
    returns the index where this rank's shard starts in the result, so a loss can locate its own
    rows (e.g. the positive of sample ``i`` is at ``offset + i``).
    """
    if not is_dist_initialized():
        return (tensor, 0) if return_offset else tensor
    if tensor.dim() == 0:
        raise ValueError("all_gather_with_grad needs a tensor with a batch dimension, got a scalar")
    sizes = gather_sizes(tensor.shape[0], device=tensor.device)
    out = _AllGatherWithGrad.apply(tensor, sizes)
    return (out, sum(sizes[:get_rank()])) if return_offset else out


@torch.no_grad()
def all_gather_no_grad(tensor: Tensor, *, return_offset: bool = False):
    """Like :func:`all_gather_with_grad` but detached (for labels, targets, statistics)."""
    if not is_dist_initialized():
        return (tensor, 0) if return_offset else tensor
    sizes = gather_sizes(tensor.shape[0], device=tensor.device)
    out = _gather(tensor.detach(), sizes)
    if return_offset:
        return out, sum(sizes[:get_rank()])
    return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks and return the result (a new tensor; the input is untouched)."""
    if not is_dist_initialized():
        return tensor
    out = tensor.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over ranks."""
    if not is_dist_initialized():
        return tensor
    return all_reduce_sum(tensor) / get_world_size()
