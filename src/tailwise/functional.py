"""Pure functional forms of every tailwise loss (``tailwise.functional.<name>_loss``)."""

from .boxes.functional import *  # noqa: F401,F403
from .classification.functional import *  # noqa: F401,F403
from .contrastive.functional import *  # noqa: F401,F403
from .ranking.functional import *  # noqa: F401,F403
from .regression.functional import *  # noqa: F401,F403
from .segmentation.functional import *  # noqa: F401,F403
