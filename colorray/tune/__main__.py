"""``python -m colorray.tune``."""

import sys

from colorray.tune.driver import main

sys.exit(main())
