"""`python -m devstack.runner`: the runner process, as make run, the tests and the chaos harness start it."""

import sys

from devstack.runner.cli import main

sys.exit(main())
