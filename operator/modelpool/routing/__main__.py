"""``python -m modelpool.routing serve --config FILE ...``"""

import sys

from modelpool.routing.cli import main

sys.exit(main())
