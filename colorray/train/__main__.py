"""``python -m colorray.train``."""

import sys

from colorray.train.driver import main

sys.exit(main())
