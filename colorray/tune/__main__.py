"""``python -m colorray.tune``."""

import sys

from colorray.train import console

console.quiet_ray_console(sys.argv[1:])  # before ray is imported

from colorray.tune.driver import main  # noqa: E402

sys.exit(main())
