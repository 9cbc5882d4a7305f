"""``python -m colorray.client``: the command-line client of the colorization service (the code lives in ``colorray.serve.client``)."""

import sys

if __name__ == "__main__":
    from colorray.serve.client import main

    sys.exit(main())
