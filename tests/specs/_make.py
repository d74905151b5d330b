"""Small input factories shared by the spec modules (CPU generator, then moved, so every device
sees the same numbers)."""

from __future__ import annotations

import torch


def randn(shape, gen, device, dtype, *, grad: bool = False, scale: float = 1.0):
    x = (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def rand(shape, gen, device, dtype, *, grad: bool = False, low: float = 0.0, high: float = 1.0):
    x = (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float32)).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def randint(high, shape, gen, device):
    return torch.randint(0, high, shape, generator=gen).to(device)
