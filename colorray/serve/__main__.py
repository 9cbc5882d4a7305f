"""``python -m colorray.serve``."""

import sys

from colorray.serve.launch import main

sys.exit(main())
