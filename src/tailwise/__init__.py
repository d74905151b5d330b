"""tailwise: losses, samplers, metrics and a benchmark for imbalanced and long-tailed learning.

Every loss has three faces (see docs/conventions.md):

* ``tailwise.functional.<name>_loss(input, target, ...)``: a pure function,
* ``tailwise.<Name>Loss(...)``: an ``nn.Module`` holding hyper-parameters and state,
* ``tailwise.build_loss("<name>", **kwargs)``: the registry.

Example:
    >>> import torch, tailwise
    >>> loss_fn = tailwise.build_loss("mse")
    >>> loss_fn(torch.zeros(4), torch.ones(4))
    tensor(1.)

The top-level names are the families' ``__all__`` (listed below so type checkers and IDEs see
them) plus the registry; ``import tailwise`` imports torch and numpy only (the stateful metrics
load torchmetrics on first use).
"""

from . import (boxes, classification, contrastive, data, distributed, functional, kernels, metrics, ranking,
               registry, regression, segmentation)
from ._validation import validation
from ._version import __version__
from .boxes import (
    box_convert, box_iou, box_iou_3d, CDIoULoss, CIoULoss, complete_box_iou, DIoULoss, distance_box_iou,
    EIoULoss, FocalEIoULoss, generalized_box_iou, generalized_box_iou_3d, get_box_backend, GIoU3DLoss,
    GIoULoss, IoU3DLoss, IoULoss, set_box_backend, wiou_momentum, WIOU_PRESETS, WIoULoss,
)
from .classification import (
    adjust_logits, BalancedAdapter, BalancedSoftmaxLoss, BalBCELoss, class_balanced_weights,
    ClassBalancedLoss, CrossEntropyLoss, difficulty_net_driver_loss, difficulty_net_step,
    difficulty_net_weights, difficulty_weights, DifficultyNet, DifficultyNetLoss,
    DifficultyWeightedLoss, drw_weights, EntropyLoss, EQLv2Loss, EqualizedFocalLoss, FocalLoss,
    IIF_VARIANTS, iif_weights, IIFLoss, KLDivLoss, ldam_margins, LDAMLoss, LearnableWeightScaling,
    LinearCrossEntropyLoss, LogitAdjustedLoss, NormedLinear, SeesawLoss, SigmoidFocalLoss,
    SoftmaxEQLLoss, tade_inverse_prior, tade_test_time_weights, TADELoss, tau_normalize,
)
from .contrastive import (
    assign_targets, BCLLoss, BoostedCLLoss, BYOLLoss, cluster_centers, copy_paste_views,
    CopyPasteViews, cp2_pool, CP2Loss, DCLLoss, DCLWLoss, hard_pair_mining, InfoNCELoss,
    KMeansResult, linear_sum_assignment, MemoryQueue, momentum_weights, MomentumLossTracker,
    NTXentLoss, PaCoLoss, propos_perturb, ProPosLoss, rescom_class_weights, ResComLoss,
    spherical_kmeans, SupConLoss, tsc_targets, TSCLoss,
)
from .ranking import (
    PAUCAtBudgetLoss, RecallAtQuantileLoss, SmoothAPLoss, WarmupBlend,
)
from .regression import (
    BalancedL1Loss, BMCLoss, BNILoss, fit_gmm, GAILoss, GMMFit, L1Loss, label_bins, MSELoss,
    SmoothL1Loss,
)
from .segmentation import (
    DiceCELoss, DiceLoss, FocalTverskyLoss, GeneralizedDiceLoss, NeuralCollapseLoss, simplex_etf,
    TverskyLoss,
)
from .registry import build_loss, describe_losses, get_loss_class, list_losses, register_loss

__all__ = [
    # package
    "__version__", "data", "distributed", "functional", "kernels", "metrics", "registry", "boxes",
    "classification", "contrastive", "ranking", "regression", "segmentation",
    # registry and validation mode
    "build_loss", "describe_losses", "get_loss_class", "list_losses", "register_loss", "validation",
    # boxes
    "box_convert", "box_iou", "box_iou_3d", "CDIoULoss", "CIoULoss", "complete_box_iou", "DIoULoss",
    "distance_box_iou", "EIoULoss", "FocalEIoULoss", "generalized_box_iou", "generalized_box_iou_3d", "get_box_backend",
    "GIoU3DLoss", "GIoULoss", "IoU3DLoss", "IoULoss", "set_box_backend", "wiou_momentum",
    "WIOU_PRESETS", "WIoULoss",
    # classification
    "adjust_logits", "BalancedAdapter", "BalancedSoftmaxLoss", "BalBCELoss",
    "class_balanced_weights", "ClassBalancedLoss", "CrossEntropyLoss", "difficulty_net_driver_loss",
    "difficulty_net_step", "difficulty_net_weights", "difficulty_weights", "DifficultyNet",
    "DifficultyNetLoss", "DifficultyWeightedLoss", "drw_weights", "EntropyLoss", "EQLv2Loss",
    "EqualizedFocalLoss", "FocalLoss", "IIF_VARIANTS", "iif_weights", "IIFLoss", "KLDivLoss",
    "ldam_margins", "LDAMLoss", "LearnableWeightScaling", "LinearCrossEntropyLoss",
    "LogitAdjustedLoss", "NormedLinear", "SeesawLoss", "SigmoidFocalLoss", "SoftmaxEQLLoss",
    "tade_inverse_prior", "tade_test_time_weights", "TADELoss", "tau_normalize",
    # contrastive
    "assign_targets", "BCLLoss", "BoostedCLLoss", "BYOLLoss", "cluster_centers", "copy_paste_views",
    "CopyPasteViews", "cp2_pool", "CP2Loss", "DCLLoss", "DCLWLoss", "hard_pair_mining",
    "InfoNCELoss", "KMeansResult", "linear_sum_assignment", "MemoryQueue", "momentum_weights",
    "MomentumLossTracker", "NTXentLoss", "PaCoLoss", "propos_perturb", "ProPosLoss",
    "rescom_class_weights", "ResComLoss", "spherical_kmeans", "SupConLoss", "tsc_targets", "TSCLoss",
    # ranking
    "PAUCAtBudgetLoss", "RecallAtQuantileLoss", "SmoothAPLoss", "WarmupBlend",
    # regression
    "BalancedL1Loss", "BMCLoss", "BNILoss", "fit_gmm", "GAILoss", "GMMFit", "L1Loss", "label_bins",
    "MSELoss", "SmoothL1Loss",
    # segmentation
    "DiceCELoss", "DiceLoss", "FocalTverskyLoss", "GeneralizedDiceLoss", "NeuralCollapseLoss",
    "simplex_etf", "TverskyLoss",
]

# A name that a family adds to its __all__ is exported here too, even before it is added to the
# lists above (add it there as well, so static type checkers see it).
_FAMILIES = (boxes, classification, contrastive, ranking, regression, segmentation)
_late = [n for fam in _FAMILIES for n in fam.__all__ if n not in __all__]
globals().update({n: getattr(fam, n) for fam in _FAMILIES for n in fam.__all__ if n in _late})
__all__ += _late
del _FAMILIES, _late
