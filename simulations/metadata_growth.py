"""``metadata-growth`` (simulations/README.md): the same as ``hybridsync simulate metadata-growth``.

    python simulations/metadata_growth.py --help
    python simulations/metadata_growth.py   # writes results/metadata-growth/
"""

import sys

from hybridsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", "metadata-growth", *sys.argv[1:]]))
