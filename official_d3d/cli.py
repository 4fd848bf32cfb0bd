"""Command-line entry points that answer a user's mistake, or a broken environment, with one line instead of a
traceback.

  def main(argv):
    ...  # raises FileNotFoundError, ConfigError, ... with a message that names the file and the problem

  if __name__ == '__main__':
    define_flags()
    cli.run_main(main, expected_errors=(d3d_config.ConfigError, FileNotFoundError))

Exit statuses:
  0    success;
  1    an expected error, printed as `error: <message>` on stderr (the user's to fix, or the environment's: a missing
       file, a server that does not answer); any other exception is a bug and keeps its traceback (status 1 too);
  130  Ctrl-C, printed as `interrupted: <what was left>`.
`D3D_TRACEBACK=1` in the environment prints the full traceback before those lines (the statuses stay the same), as
for the `tfrecord_tools` commands. Flag errors are absl's (`FATAL Flags parsing error: ...`, status 1).
"""

import os
import sys
import traceback
from typing import Any, Callable, List, Sequence, Type

from absl import app

TRACEBACK_VARIABLE = 'D3D_TRACEBACK'
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def traceback_requested() -> bool:
  """Whether `D3D_TRACEBACK` asks for full tracebacks (set, and neither empty nor 0)."""
  return os.environ.get(TRACEBACK_VARIABLE, '') not in ('', '0')


def _print_traceback_if_requested() -> None:
  """Prints the traceback of the exception being handled, if D3D_TRACEBACK asks for it."""
  if traceback_requested():
    traceback.print_exc()


def error_line(error: BaseException) -> str:
  """`error: <message>` on one line, whatever line breaks the message has; `<file>: <problem>` for an OSError that
  the operating system raised."""
  if isinstance(error, OSError) and error.filename and error.strerror:
    message = f'{error.filename}: {error.strerror}'
  else:
    message = ' '.join(str(error).split()) or type(error).__name__
  return f'error: {message}'


def run_main(main: Callable[[List[str]], Any], expected_errors: Sequence[Type[BaseException]],
             interrupted: str = 'stopped before the end') -> None:
  """Runs `main` as `absl.app.run(main)` does; ends the process with the statuses of this module's docstring.

  Args:
    main: the absl main function (takes the arguments left after flag parsing).
    expected_errors: exception types whose message is all a user needs: printed as one `error:` line, status 1.
    interrupted: what the user should know after Ctrl-C (e.g. what was kept), printed as `interrupted: ...`.
  """
  expected_errors = tuple(expected_errors)

  def main_with_one_line_errors(argv: List[str]) -> Any:
    try:
      return main(argv)
    except KeyboardInterrupt:
      _print_traceback_if_requested()
      print(f'interrupted: {interrupted}', file=sys.stderr)
      sys.exit(EXIT_INTERRUPTED)
    except expected_errors as error:
      _print_traceback_if_requested()
      print(error_line(error), file=sys.stderr)
      sys.exit(EXIT_ERROR)

  app.run(main_with_one_line_errors)
