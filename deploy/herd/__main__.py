"""``python3 -m deploy.herd``: the herd's command line (``deploy.herd.cli``)."""

import sys

from deploy.herd.cli import main

if __name__ == "__main__":
    sys.exit(main())
