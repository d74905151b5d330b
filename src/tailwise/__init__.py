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
"""

from . import data, distributed, functional, kernels, metrics  # noqa: F401
from ._validation import validation  # noqa: F401
from .boxes import *  # noqa: F401,F403
from .classification import *  # noqa: F401,F403
from .contrastive import *  # noqa: F401,F403
from .ranking import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .registry import build_loss, describe_losses, get_loss_class, list_losses, register_loss  # noqa: F401
from .segmentation import *  # noqa: F401,F403

__version__ = "0.1.0"
