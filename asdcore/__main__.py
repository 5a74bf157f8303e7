"""``python -m asdcore``: see :mod:`asdcore.cli`."""
import sys

from asdcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
