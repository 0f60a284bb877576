"""`python -m bench [options]`: the whole benchmark (bench/run.py). `python -m bench TOOL ...`
runs one of TOOLS with the rest of the arguments."""

import sys
from importlib import import_module

from bench.run import main

TOOLS = {"decode": "bench.decode", "memory": "bench.memory"}

if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
    sys.exit(import_module(TOOLS[sys.argv[1]]).main(sys.argv[2:]))
sys.exit(main())
