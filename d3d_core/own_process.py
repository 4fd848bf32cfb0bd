"""A function called in a process of its own, for work after which TensorFlow would not give its memory back.

A process that builds, compiles and trains model after model keeps growing: TensorFlow holds on to each one's functions
and programs (`keras.backend.clear_session` does not free them), so the three-seed demo held 9.9 GB by its third seed.
`call(function, *args)` runs `function(*args)` in a fresh 'spawn' process, TensorFlow started as quietly as in this
one, and returns its result or raises its exception here (a bug's traceback from the child chained to it).

Ctrl-C: the child runs in a process group of its own, so the terminal's Ctrl-C reaches this process alone, which
passes each one on. The child stops as it would have stopped on its own (training after its current step, a second
Ctrl-C at once), and its KeyboardInterrupt is raised here. SIGTERM (`kill`, a job scheduler's time limit) ends the
child with it, then this process: a child left behind would go on training, out of its group's reach.
"""

import functools
import multiprocessing
import os
import pickle
import signal
import tempfile
import traceback
from typing import Any, Callable

from d3d_core import cli
from d3d_core import quiet_start

_OUTCOME_FILENAME = 'outcome.pickle'


class ChildTraceback(Exception):
  """The child's traceback, as text: the cause chained to an exception re-raised from the child."""


def _run_and_store(function: Callable[..., Any], args: tuple, folder: str) -> None:
  """In the child: `function(*args)`, its result or exception pickled into `folder`."""
  os.setpgid(0, 0)
  signal.signal(signal.SIGINT, signal.default_int_handler)  # started ignoring it: Ctrl-C is now the parent's to pass on
  try:
    outcome = ('result', function(*args))
  except BaseException as error:  # pylint: disable=broad-except  # KeyboardInterrupt included: raised in the parent
    outcome = ('error', error, traceback.format_exc())
  try:
    payload = pickle.dumps(outcome)
    pickle.loads(payload)  # some exceptions pickle but do not unpickle: the parent must be able to read it
  except Exception:  # pylint: disable=broad-except  # then its text still goes back
    if outcome[0] == 'result':
      outcome = ('error', RuntimeError(f'{function.__name__} returned a value that cannot be pickled'), '')
    else:
      outcome = ('error', RuntimeError(cli.describe(outcome[1])), outcome[2])
    payload = pickle.dumps(outcome)
  with open(os.path.join(folder, _OUTCOME_FILENAME), 'wb') as f:
    f.write(payload)


def _terminate_both(process: multiprocessing.Process, signum: int, frame) -> None:
  """SIGTERM handler of the parent: the child ends by it, then this process as it would have without the handler."""
  del frame
  os.kill(process.pid, signum)
  signal.signal(signum, signal.SIG_DFL)
  os.kill(os.getpid(), signum)


def call(function: Callable[..., Any], *args: Any) -> Any:
  """`function(*args)` in a fresh process (`function` and `args` picklable): its result, or its exception raised."""
  with tempfile.TemporaryDirectory(prefix='d3d_own_process_') as folder:
    target, target_args = quiet_start.quiet_initializer(_run_and_store, function, args, folder)
    process = multiprocessing.get_context('spawn').Process(target=target, args=target_args,
                                                             name=getattr(function, '__name__', 'own_process'))
    with cli.sigint_handled_by(signal.SIG_IGN):  # the child starts ignoring Ctrl-C until its handler is set
      process.start()
    with cli.sigint_handled_by(lambda signum, frame: os.kill(process.pid, signal.SIGINT)), \
         cli.signal_handled_by(signal.SIGTERM, functools.partial(_terminate_both, process)):
      process.join()
    path = os.path.join(folder, _OUTCOME_FILENAME)
    if not os.path.exists(path):
      raise RuntimeError(f'the process running {process.name} ended without a result (exit status '
                         f'{process.exitcode})')
    with open(path, 'rb') as f:
      outcome = pickle.load(f)
  if outcome[0] == 'result':
    return outcome[1]
  _, error, child_traceback = outcome
  if isinstance(error, KeyboardInterrupt):
    raise error
  raise error from ChildTraceback(child_traceback)
