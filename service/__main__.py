"""`python -m service [serve options]` runs the server, as `roost serve` does."""

from __future__ import annotations

import sys

from service.cli import main

args = sys.argv[1:]
sys.exit(main(args if args[:1] == ["serve"] else ["serve", *args]))
