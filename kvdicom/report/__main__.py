"""Entry point for ``python -m kvdicom.report``."""

import sys

from .cli import main

sys.exit(main())
