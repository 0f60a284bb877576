"""`python -m service [--host H] [--port P] [--model-repo DIR]` runs the server."""

from __future__ import annotations

import sys

from service.server import main

sys.exit(main())
