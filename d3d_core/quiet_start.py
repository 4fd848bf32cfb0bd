"""TensorFlow started without its C++ start-up notices (CUDA probing, CPU features, absl's `InitializeLog` line),
which every process that imports it prints and which `TF_CPP_MIN_LOG_LEVEL` alone does not stop.

Each command calls `start_tensorflow` before anything else imports TensorFlow, in its worker processes too; the
library never does, so its users keep TensorFlow's own logging. It sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ errors only;
child processes inherit it) and imports TensorFlow, and finds its devices, with stderr closed. `D3D_TF_LOGS=1` in the
environment leaves TensorFlow's start-up as it is: its notices say, for one, why a GPU is not used.
"""

import contextlib
import os

SHOW_VARIABLE = 'D3D_TF_LOGS'


@contextlib.contextmanager
def _stderr_closed():
  """File descriptor 2 on /dev/null: TensorFlow's C++ code writes there directly, past Python's sys.stderr."""
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def start_tensorflow() -> None:
  """Imports TensorFlow and initialises its devices quietly, unless `D3D_TF_LOGS` is set (and not 0)."""
  if os.environ.get(SHOW_VARIABLE, '') not in ('', '0'):
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with _stderr_closed():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # Finding the devices prints notices of its own (cuInit). Physical ones only: listing logical devices would start
    # TensorFlow's runtime, after which MultiWorkerMirroredStrategy can no longer configure its collective ops.
    tf.config.list_physical_devices()
