"""Exit statuses of the tfrecord_tools commands, and their entry point (`d3d_core.cli` with these statuses).

0: everything done; 1: done, but some inputs were skipped (the command's output lists them); 2: a usage or setup
error, so nothing, or not everything, was done; 130: Ctrl-C.
"""

from typing import Any, Callable, List, NoReturn, Sequence, Type

from d3d_core import cli

EXIT_OK = cli.EXIT_OK
EXIT_SKIPPED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = cli.EXIT_INTERRUPTED


def run_main(main: Callable[[List[str]], Any], expected_errors: Sequence[Type[BaseException]],
             interrupted: str = '') -> NoReturn:
  """`d3d_core.cli.run_main` with status 2 for errors."""
  cli.run_main(main, expected_errors, interrupted, error_status=EXIT_ERROR)
