"""`python -m qscale_e2e ...`: the e2e probe CLI (see probe.py)."""

import sys

from qscale_e2e.probe import main

sys.exit(main())
