"""``python -m colorray.prior``: the empirical ab prior of a shard set (the code lives in ``colorray.data.prior``)."""

import sys

if __name__ == "__main__":
    from colorray.data.prior import main

    sys.exit(main())
