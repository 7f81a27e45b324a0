"""`python -m bench.failover --bootstrap HOST:PORT [...]`: see bench.py and README.md."""

import sys

from bench.failover.bench import main

sys.exit(main())
