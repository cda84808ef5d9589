"""`python -m bench.throughput SUITE --measure-only --out DIR` (bare GPU machines)."""

import sys

from .cli import main

sys.exit(main())
