"""``python -m steplab`` runs the CLI."""

import sys

from steplab.cli import main

sys.exit(main())
