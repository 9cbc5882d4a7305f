"""``python -m colorray.evaluate``."""

import sys

from colorray.evaluate.harness import main

sys.exit(main())
