"""`python -m ops`: the operator command line."""

import sys

from ops.cli import main

sys.exit(main())
