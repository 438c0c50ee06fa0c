import sys

from modelpool.cli import main

sys.exit(main())
