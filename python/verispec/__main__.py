"""`python -m verispec ...` runs the `verispec` command."""

import sys

from verispec.cli import main

sys.exit(main())
