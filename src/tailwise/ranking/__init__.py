"""Ranking-metric losses for rare positives: Smooth-AP, recall at a score quantile, partial AUC
over an FPR band, and a warm-up blend between two losses."""

from . import functional  # noqa: F401
from .pauc import PAUCAtBudgetLoss
from .recall_at_quantile import RecallAtQuantileLoss
from .smooth_ap import SmoothAPLoss
from .warmup_blend import WarmupBlend

__all__ = ["SmoothAPLoss", "RecallAtQuantileLoss", "PAUCAtBudgetLoss", "WarmupBlend"]
