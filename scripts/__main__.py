import sys

from scalpscan.scripts.cli import main

sys.exit(main())
