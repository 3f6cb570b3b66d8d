"""``partition-heal`` (simulations/README.md): the same as ``hybridsync simulate partition-heal``.

    python simulations/partition_heal.py --help
    python simulations/partition_heal.py   # writes results/partition-heal/
"""

import sys

from hybridsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", "partition-heal", *sys.argv[1:]]))
