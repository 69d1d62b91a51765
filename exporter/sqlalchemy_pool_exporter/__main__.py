"""``python -m sqlalchemy_pool_exporter`` runs the command line."""

import sys

from sqlalchemy_pool_exporter.cli import main

sys.exit(main())
