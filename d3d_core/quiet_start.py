"""TensorFlow started without its C++ start-up notices (CUDA probing, CPU features, absl's `InitializeLog` line),
which every process that imports it prints and which `TF_CPP_MIN_LOG_LEVEL` alone does not stop.

Each command calls `start_tensorflow` before anything else imports TensorFlow, in its worker processes too; the
library never does, so its users keep TensorFlow's own logging. It sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ errors only;
child processes inherit it) and imports TensorFlow, and finds its devices, with stderr closed. `D3D_TF_LOGS=1` in the
environment leaves TensorFlow's start-up as it is: its notices say, for one, why a GPU is not used.

Worker processes that 'spawn' starts re-run a command's main module, and so its `start_tensorflow` call, except when
the command is a package's `__main__` (`python -m examples.motion_demo`), which multiprocessing never re-runs. A pool
started through `quiet_initializer` follows its parent either way.
"""

import contextlib
import os
import pickle
from typing import Any, Callable, Tuple

SHOW_VARIABLE = 'D3D_TF_LOGS'
# Set by `start_tensorflow` and inherited by child processes: their parent started TensorFlow quietly.
QUIET_VARIABLE = 'D3D_QUIET_START'


@contextlib.contextmanager
def stderr_closed():
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
  os.environ[QUIET_VARIABLE] = '1'
  with stderr_closed():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # Finding the devices prints notices of its own (cuInit). Physical ones only: listing logical devices would start
    # TensorFlow's runtime, after which MultiWorkerMirroredStrategy can no longer configure its collective ops.
    tf.config.list_physical_devices()


def _start_then_call(payload: bytes) -> None:
  """In a worker: TensorFlow started as the parent did, then the pickled initializer, whose module may import it."""
  if os.environ.get(QUIET_VARIABLE) == '1':
    start_tensorflow()
  function, args = pickle.loads(payload)
  function(*args)


def quiet_initializer(function: Callable[..., Any], *args: Any) -> Tuple[Callable[[bytes], None], Tuple[bytes]]:
  """(initializer, initargs) for a process pool: `function(*args)` in each worker, after TensorFlow starts as quietly
  as in this process. Pickled here so that the worker unpickles them, and imports their modules, only after that."""
  return _start_then_call, (pickle.dumps((function, args)),)
