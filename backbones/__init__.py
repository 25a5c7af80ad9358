"""nn.Modules only, one family per file, each registered with timm on import.

Importing this package registers every family (``import zoo`` does it for you). This package never imports ``zoo``.
"""

# Each family module registers its variants with timm's registry when imported.
# (helpers: add one import line per family here, keep alphabetical)
from . import agent  # noqa: F401
from . import biformer  # noqa: F401
from . import flowformer  # noqa: F401
from . import poolformer_official  # noqa: F401
