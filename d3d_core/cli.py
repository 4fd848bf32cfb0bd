"""What every command shares: one `error:` line instead of a traceback, and documented exit statuses.

  def main(argv):
    ...  # raises ConfigError, FileNotFoundError, ... with a message that names the file and the problem

  if __name__ == '__main__':
    define_flags()
    cli.run_main(main, expected_errors=(d3d_config.ConfigError,), interrupted='rerun the same command to resume')

A user's mistake or a broken environment (a bad flag, a missing or unreadable file, a full disk, a folder in use)
ends a command with one line on stderr, `error: <file>: <problem>`, and the command's error status (1 for the
official_d3d commands; the tfrecord_tools commands use 2, as 1 means "some videos skipped" there). Ctrl-C ends it
with `interrupted: <what to do>` and status 130. Any other exception is a bug: its traceback is printed, then its
`error:` line, and the status is the error status, never one that means success. `D3D_TRACEBACK=1` in the environment
prints the traceback of expected errors and Ctrl-C too (the statuses stay the same).

A command's console holds its own output and progress: library log lines (checkpoints saved, TensorFlow's INFO)
show only at absl's `--verbosity=0` (INFO) or 1 (DEBUG), not by default (warnings and errors). A command calls
`d3d_core.quiet_start.start_tensorflow` first, before TensorFlow's import, to keep its C++ start-up notices off the
console too.
"""

import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, List, NoReturn, Sequence, Type

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

TRACEBACK_VARIABLE = 'D3D_TRACEBACK'
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# Errors of the machine rather than of the program; their messages name the file and the problem.
ENVIRONMENT_ERRORS = (OSError, ImportError, tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
                      tf.errors.ResourceExhaustedError, tf.errors.DataLossError, tf.errors.UnavailableError)


def traceback_requested() -> bool:
  """Whether `D3D_TRACEBACK` asks for tracebacks along with the one-line errors (set, and neither empty nor 0)."""
  return os.environ.get(TRACEBACK_VARIABLE, '') not in ('', '0')


def error_reason(error: BaseException) -> str:
  """The problem an OS or TensorFlow I/O error reports, without the file name or the op around it."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  if isinstance(error, tf.errors.OpError):
    text = error.message.split('}}')[-1].split(' [Op:')[0].strip()
    return text.rsplit('; ', 1)[-1]  # TensorFlow's file errors read '<path>; <problem>'
  return str(error)


def describe(error: BaseException) -> str:
  """One line naming the file (where the error knows it) and the problem."""
  if isinstance(error, OSError) and error.filename:
    return f'{error.filename}: {error_reason(error)}'
  if isinstance(error, tf.errors.OpError):
    return error.message.split('\n')[0].replace('; ', ': ', 1)
  return ' '.join(str(error).split()) or type(error).__name__


def run(command: Callable[[], Any], expected_errors: Sequence[Type[BaseException]], interrupted: str = '',
        error_status: int = EXIT_ERROR) -> int:
  """Runs `command` and returns the exit status: its own (None: 0), or as the module docstring says on errors."""
  try:
    return command() or EXIT_OK
  except KeyboardInterrupt:
    if traceback_requested():
      traceback.print_exc()
    sys.stderr.write(f'interrupted: {interrupted}\n' if interrupted else 'interrupted\n')
    return EXIT_INTERRUPTED
  except tuple(expected_errors) + ENVIRONMENT_ERRORS as error:
    if traceback_requested():
      traceback.print_exc()
    sys.stderr.write(f'error: {describe(error)}\n')
    return error_status
  except Exception as error:  # pylint: disable=broad-except
    traceback.print_exc()
    sys.stderr.write(f'error: {type(error).__name__}: {describe(error)} (a bug: the traceback above is for '
                     'reporting it)\n')
    return error_status


@contextlib.contextmanager
def signal_handled_by(signum: int, handler) -> Iterator[None]:
  """Inside, signal `signum` calls `handler` (a `signal` handler, or SIG_IGN); the previous one is restored after.
  Only the main thread may set signal handlers: elsewhere the signal is left as it is."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signum, handler)
  try:
    yield
  finally:
    signal.signal(signum, previous)


def sigint_handled_by(handler):
  """Inside, Ctrl-C calls `handler` (`signal_handled_by(SIGINT, handler)`)."""
  return signal_handled_by(signal.SIGINT, handler)


def quiet_logging(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Warnings and errors only, unless --verbosity was given (absl would show INFO), each through absl's handler once:
  TensorFlow's logger, given a handler of its own when imported before absl's, prints every line twice."""
  if not flag_values['verbosity'].present:
    flag_values.verbosity = logging.WARNING
  tf_logger = tf.get_logger()
  for handler in list(tf_logger.handlers):
    tf_logger.removeHandler(handler)


def flags_parser(error_status: int = EXIT_ERROR) -> Callable[[Sequence[str]], List[str]]:
  """absl's flag parsing for `app.run`, with a bad flag or a stray argument answered by one line and `error_status`,
  and the quiet logging of `quiet_logging`."""

  def exit_with_error(message: str) -> NoReturn:
    sys.stderr.write(f'error: {message}\n')
    sys.exit(error_status)

  def parse(argv: Sequence[str]) -> List[str]:
    try:
      remaining = flags.FLAGS(argv)
    except flags.Error as error:
      exit_with_error(f'{error} (--helpfull lists the flags)')
    if len(remaining) > 1:
      exit_with_error(f'unexpected arguments {remaining[1:]} (flags take the form --name=value)')
    quiet_logging()
    return remaining

  return parse


def run_main(main: Callable[[List[str]], Any], expected_errors: Sequence[Type[BaseException]],
             interrupted: str = '', error_status: int = EXIT_ERROR) -> NoReturn:
  """`absl.app.run(main)` with the error lines and statuses of this module's docstring."""
  app.run(lambda argv: run(lambda: main(argv), expected_errors, interrupted, error_status),
          flags_parser=flags_parser(error_status))
