"""`python -m hpctrain.train ...` is `hpctrain train ...`."""

import sys

from hpctrain.train.command import main

sys.exit(main())
