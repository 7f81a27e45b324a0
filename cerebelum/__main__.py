import sys

from cerebelum.cli.main import main

sys.exit(main())
