import sys

from bench.gpu.report import main

sys.exit(main())
