"""classification losses."""

from . import functional  # noqa: F401

__all__: list = []

# --- cross-entropy family, focal, class-balanced, prior-based (classification main author) ---
from .bal_bce import BalBCELoss  # noqa: E402
from .class_balanced import ClassBalancedLoss, class_balanced_weights  # noqa: E402
from .cross_entropy import CrossEntropyLoss, EntropyLoss, KLDivLoss  # noqa: E402
from .difficulty import DifficultyWeightedLoss, difficulty_weights  # noqa: E402
from .focal import FocalLoss, SigmoidFocalLoss  # noqa: E402
from .iif import IIF_VARIANTS, IIFLoss, iif_weights  # noqa: E402
from .logit_adjustment import BalancedSoftmaxLoss, LogitAdjustedLoss, adjust_logits  # noqa: E402

__all__ += ["EntropyLoss", "CrossEntropyLoss", "KLDivLoss", "FocalLoss", "SigmoidFocalLoss", "ClassBalancedLoss",
            "class_balanced_weights", "BalancedSoftmaxLoss", "LogitAdjustedLoss", "adjust_logits", "BalBCELoss",
            "IIFLoss", "iif_weights", "IIF_VARIANTS", "DifficultyWeightedLoss", "difficulty_weights"]

# --- Equalization Losses and TADE (eqlv2.py, softmax_eql.py, equalized_focal.py, tade.py) ---
from .eqlv2 import EQLv2Loss  # noqa: E402
from .equalized_focal import EqualizedFocalLoss  # noqa: E402
from .softmax_eql import SoftmaxEQLLoss  # noqa: E402
from .tade import TADELoss, tade_inverse_prior, tade_test_time_weights  # noqa: E402

__all__ += ["EQLv2Loss", "SoftmaxEQLLoss", "EqualizedFocalLoss", "TADELoss", "tade_inverse_prior",
            "tade_test_time_weights"]

# --- LDAM-DRW, Seesaw, decoupled classifiers (ldam.py, seesaw.py, decoupling.py) ---
from .decoupling import LearnableWeightScaling, tau_normalize  # noqa: E402
from .ldam import LDAMLoss, NormedLinear, drw_weights, ldam_margins  # noqa: E402
from .seesaw import SeesawLoss  # noqa: E402

__all__ += ["LDAMLoss", "NormedLinear", "drw_weights", "ldam_margins", "SeesawLoss", "LearnableWeightScaling",
            "tau_normalize"]

# --- Difficulty-Net (difficulty_net.py) ---
from .difficulty_net import (DifficultyNet, DifficultyNetLoss, difficulty_net_driver_loss,  # noqa: E402
                             difficulty_net_step, difficulty_net_weights)

__all__ += ["DifficultyNet", "DifficultyNetLoss", "difficulty_net_weights", "difficulty_net_driver_loss",
            "difficulty_net_step"]

# --- BALLAD's balanced adapter (ballad.py) ---
from .ballad import BalancedAdapter  # noqa: E402

__all__ += ["BalancedAdapter"]

# --- fused linear + cross-entropy (linear_cross_entropy.py) ---
from .linear_cross_entropy import LinearCrossEntropyLoss  # noqa: E402

__all__ += ["LinearCrossEntropyLoss"]
