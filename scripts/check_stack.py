"""Two-rank sanity check of the installed stack, run by env/install.sh:

    horovodrun -np 2 -H localhost:2 --gloo python scripts/check_stack.py

Fails unless every rank sees legacy Keras 2 (tf-keras) and a Horovod allreduce averages.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import horovod  # noqa: E402
import horovod.tensorflow.keras as hvd  # noqa: E402
import horovod.tensorflow.keras.callbacks  # noqa: E402,F401  (crashed before the import fix)
import tensorflow as tf  # noqa: E402

from hpctrain.train.keras_compat import require_keras2  # noqa: E402

hvd.init()
keras_version = require_keras2(tf)
avg = float(hvd.allreduce(tf.constant(float(hvd.rank())), op=hvd.Average))
expected = (hvd.size() - 1) / 2
if hvd.size() != 2 or abs(avg - expected) > 1e-6:
    sys.exit(f"rank {hvd.rank()}: size {hvd.size()}, allreduce {avg} != {expected}")
print(f"rank {hvd.rank()}/{hvd.size()}: TF {tf.__version__}, Keras {keras_version}, "
      f"Horovod {horovod.__version__}: ok", flush=True)
