import sys

from cmgh.cli import main

sys.exit(main())
