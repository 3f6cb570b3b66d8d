"""``conflicts`` (simulations/README.md): the same as ``hybridsync simulate conflicts``.

    python simulations/conflicts.py --help
    python simulations/conflicts.py   # writes results/conflicts/
"""

import sys

from hybridsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", "conflicts", *sys.argv[1:]]))
