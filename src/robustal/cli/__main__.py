"""``python -m robustal.cli``."""

import sys

from robustal.cli import main

sys.exit(main())
