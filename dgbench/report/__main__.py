"""Entry point for ``python -m dgbench.report``."""

import sys

from .cli import main

sys.exit(main())
