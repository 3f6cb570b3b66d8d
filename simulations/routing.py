"""``routing`` (simulations/README.md): the same as ``hybridsync simulate routing``.

    python simulations/routing.py --help
    python simulations/routing.py   # writes results/routing/
"""

import sys

from hybridsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", "routing", *sys.argv[1:]]))
