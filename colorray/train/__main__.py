"""``python -m colorray.train``."""

import sys

from colorray.train import console

console.quiet_ray_console(sys.argv[1:])  # before ray is imported

from colorray.train.driver import main  # noqa: E402

sys.exit(main())
