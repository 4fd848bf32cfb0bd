"""What the tfrecord_tools commands share: their exit statuses, and one `error:` line instead of a traceback.

A user's mistake or a broken environment (a bad flag, a missing or unreadable file, a full disk, an output folder in
use) ends a command with one line on stderr, `error: <file>: <problem>`, and status 2; D3D_TRACEBACK=1 in the
environment prints the traceback too, as it does for the official_d3d commands. Ctrl-C ends a command with status
130. Any other exception is a bug: it prints its traceback, then its `error:` line, and ends with status 2 as well,
never with a status that means success.
"""

import os
import sys
import traceback
from typing import Callable, List, NoReturn, Sequence, Tuple, Type

import tensorflow as tf
from absl import flags

EXIT_OK = 0
EXIT_SKIPPED = 1  # done, but some inputs were skipped: the command's output lists them
EXIT_ERROR = 2  # usage or setup error: nothing, or not everything, could be done
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

TRACEBACK_VARIABLE = 'D3D_TRACEBACK'

# Errors of the machine rather than of the program: the message names the file and the problem.
_ENVIRONMENT_ERRORS = (OSError, tf.errors.OpError, ImportError)


def traceback_requested() -> bool:
  """Whether D3D_TRACEBACK (set, and neither empty nor 0, as for the official_d3d commands) asks for tracebacks."""
  return os.environ.get(TRACEBACK_VARIABLE, '') not in ('', '0')


def error_reason(error: Exception) -> str:
  """The problem an OS or TensorFlow I/O error reports, without the file name or the op around it."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  if isinstance(error, tf.errors.OpError):
    text = error.message.split('}}')[-1].split(' [Op:')[0].strip()
    return text.rsplit('; ', 1)[-1]  # TensorFlow's file errors read '<path>; <problem>'
  return str(error)


def describe(error: Exception) -> str:
  """One line naming the file (where the error knows it) and the problem."""
  if isinstance(error, OSError) and error.filename:
    text = f'{error.filename}: {error_reason(error)}'
  elif isinstance(error, tf.errors.OpError):
    text = error.message.split('\n')[0].replace('; ', ': ', 1)
  else:
    text = str(error)
  return ' '.join(text.split()) or type(error).__name__


def _exit_with_error(message: str) -> NoReturn:
  sys.stderr.write(f'error: {message}\n')
  sys.exit(EXIT_ERROR)


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl's flag parsing for `app.run`, with a bad flag or a stray argument answered by one line and status 2."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as error:
    _exit_with_error(f'{error} (--helpfull lists the flags)')
  if len(remaining) > 1:
    _exit_with_error(f'unexpected arguments {remaining[1:]} (flags take the form --name=value)')
  return remaining


def run(command: Callable[[], int], user_errors: Tuple[Type[Exception], ...], interrupted_hint: str = '') -> int:
  """Runs `command` and returns its exit status, answering its errors and Ctrl-C as the module docstring says."""
  try:
    return command()
  except KeyboardInterrupt:
    if traceback_requested():
      traceback.print_exc()
    sys.stderr.write(f'interrupted: {interrupted_hint}\n' if interrupted_hint else 'interrupted\n')
    return EXIT_INTERRUPTED
  except user_errors + _ENVIRONMENT_ERRORS as error:
    if traceback_requested():
      traceback.print_exc()
    sys.stderr.write(f'error: {describe(error)}\n')
    return EXIT_ERROR
  except Exception as error:  # pylint: disable=broad-except
    traceback.print_exc()
    sys.stderr.write(f'error: {type(error).__name__}: {describe(error)} (a bug: the traceback above is for '
                     'reporting it)\n')
    return EXIT_ERROR
