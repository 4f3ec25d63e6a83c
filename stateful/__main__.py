"""``python -m stateful``: see :mod:`stateful.cli`."""

import sys

from stateful.cli import main

sys.exit(main())
