"""`python -m roost ...` is the `roost` command."""

from __future__ import annotations

import sys

from roost.cli import main

sys.exit(main())
