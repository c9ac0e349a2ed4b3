"""``python -m galnb book`` builds the book; ``python -m galnb sync`` pairs the notebooks."""

import sys

from .book import _main

sys.exit(_main())
