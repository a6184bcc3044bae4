"""``python -m faasd.baseimages ensure`` (see :mod:`faasd.baseimages.cli`)."""

import sys

from faasd.baseimages.cli import main

sys.exit(main())
