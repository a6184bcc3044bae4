"""Moved: base images are built by :mod:`faasd.baseimages`, a package above the image store.

This module only keeps ``from faasd.images.base import ensure_base_images`` and
``python -m faasd.images.base ensure`` working for code written before the move (issue 14); import from
:mod:`faasd.baseimages` instead. It is the one import from ``faasd.images`` upwards; delete it once no
branch uses the old path.
"""

from __future__ import annotations

import sys

from faasd.baseimages import *  # noqa: F403
from faasd.baseimages import __all__ as __all__
from faasd.baseimages.cli import main

if __name__ == "__main__":
    sys.exit(main())
