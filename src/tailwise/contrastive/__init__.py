"""Contrastive and representation losses: InfoNCE (+ MemoryQueue), SupCon, DCL/DCLW, PaCo, BCL, TSC,
ResCom pieces, BYOL.

All SupCon-style losses share one fused, row-chunked log-sum-exp (``_common.py``) and are exact
under ``torch.distributed`` with ``gather_distributed=True``. See docs/contrastive.md.
"""

from . import functional  # noqa: F401
from .bcl import BCLLoss
from .byol import BYOLLoss
from .dcl import DCLLoss, DCLWLoss
from .info_nce import InfoNCELoss
from .paco import PaCoLoss
from .queue import MemoryQueue
from .rescom import ResComLoss, hard_pair_mining, rescom_class_weights
from .supcon import SupConLoss
from .tsc import TSCLoss, assign_targets, linear_sum_assignment, tsc_targets

__all__ = ["InfoNCELoss", "SupConLoss", "DCLLoss", "DCLWLoss", "PaCoLoss", "BCLLoss", "BYOLLoss", "MemoryQueue",
           "TSCLoss", "ResComLoss", "tsc_targets", "assign_targets", "linear_sum_assignment",
           "rescom_class_weights", "hard_pair_mining"]

from .boosted import BoostedCLLoss, MomentumLossTracker, momentum_weights  # noqa: E402

__all__ += ["BoostedCLLoss", "MomentumLossTracker", "momentum_weights"]

from .propos import KMeansResult, ProPosLoss, cluster_centers, propos_perturb, spherical_kmeans  # noqa: E402

__all__ += ["ProPosLoss", "propos_perturb", "spherical_kmeans", "KMeansResult", "cluster_centers"]

from .cp2 import CopyPasteViews, CP2Loss, copy_paste_views, cp2_pool  # noqa: E402

__all__ += ["CP2Loss", "copy_paste_views", "CopyPasteViews", "cp2_pool"]

from .ntxent import NTXentLoss  # noqa: E402

__all__ += ["NTXentLoss"]
