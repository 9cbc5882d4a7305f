"""``python -m colorray.study``."""

import sys

from colorray.study.runner import main

sys.exit(main())
