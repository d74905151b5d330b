"""Functional forms of the ranking losses."""

from .pauc import pauc_at_budget_loss
from .recall_at_quantile import recall_at_quantile_loss
from .smooth_ap import smooth_ap_loss

__all__ = ["smooth_ap_loss", "recall_at_quantile_loss", "pauc_at_budget_loss"]
