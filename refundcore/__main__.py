"""``python -m refundcore``: the ``refundcore`` command."""

import sys

from .cli import main

sys.exit(main())
