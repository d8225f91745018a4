"""``python -m torchdiag`` runs the command-line interface."""

import sys

from torchdiag.cli import main

sys.exit(main())
