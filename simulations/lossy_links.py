"""``lossy-links`` (simulations/README.md): the same as ``hybridsync simulate lossy-links``.

    python simulations/lossy_links.py --help
    python simulations/lossy_links.py   # writes results/lossy-links/
"""

import sys

from hybridsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", "lossy-links", *sys.argv[1:]]))
