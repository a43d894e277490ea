"""``python -m sparsemask`` = the ``sparsemask`` command (see :mod:`sparsemask.cli`)."""
import sys

from .cli import main

sys.exit(main())
