"""`python -m golden FIXTURE.pt ...`: see golden.cli."""

import sys

from .cli import main

sys.exit(main())
