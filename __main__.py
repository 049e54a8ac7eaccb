"""``python -m scalpscan``: the same as the ``scalpscan`` command."""

import sys

from scalpscan.scripts.cli import main

sys.exit(main())
