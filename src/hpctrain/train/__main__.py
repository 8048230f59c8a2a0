"""`python -m hpctrain.train ...` is `hpctrain train ...`."""

from hpctrain.environment import end_process
from hpctrain.train.command import main

end_process(main())
