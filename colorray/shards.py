"""``python -m colorray.shards``: image folders to WebDataset shards (the code lives in ``colorray.data.shards``)."""

import sys

if __name__ == "__main__":
    from colorray.data.shards import main

    sys.exit(main())
