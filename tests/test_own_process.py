"""d3d_core.own_process: a function run in a process of its own, its result or error brought back, Ctrl-C passed on."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from d3d_core import own_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_result_comes_from_another_process():
  assert own_process.call(os.getpid) != os.getpid()
  assert own_process.call(divmod, 17, 5) == (3, 2)


def test_the_childs_error_is_raised_here_with_its_traceback_as_the_cause():
  with pytest.raises(ValueError, match="invalid literal for int.. with base 10: 'seven'") as raised:
    own_process.call(int, 'seven')
  assert isinstance(raised.value.__cause__, own_process.ChildTraceback)
  assert 'Traceback' in str(raised.value.__cause__) and 'ValueError' in str(raised.value.__cause__)


def wait_for_a_signal(ready_path):
  """In the child: says that it runs (its Ctrl-C handler set) and its process id, then waits for a signal."""
  with open(ready_path + '.part', 'w') as f:
    f.write(str(os.getpid()))
  os.replace(ready_path + '.part', ready_path)
  signal.pause()


def start_parent_of_waiting_child(ready):
  """A command whose work, in its child, waits for a signal; returned once the child is ready."""
  command = [sys.executable, '-c',
             'import sys\n'
             f'sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n'
             'import test_own_process\n'
             'from d3d_core import cli, own_process\n'
             f'sys.exit(cli.run(lambda: own_process.call(test_own_process.wait_for_a_signal, {str(ready)!r}), (),\n'
             "                  interrupted='rerun to resume'))\n"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
  assert ready.exists(), process.communicate(timeout=60)[1]
  return process


@pytest.mark.slow
def test_ctrl_c_reaches_the_child_through_the_parent_and_ends_both_as_an_interrupt(tmp_path):
  # One SIGINT, to the parent alone, as a terminal's Ctrl-C now reaches only it (the child has a process group of its
  # own).
  process = start_parent_of_waiting_child(tmp_path / 'ready')
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130, stderr
  assert stderr.strip().splitlines()[-1] == 'interrupted: rerun to resume'


@pytest.mark.slow
def test_sigterm_to_the_parent_ends_the_child_too(tmp_path):
  ready = tmp_path / 'ready'
  process = start_parent_of_waiting_child(ready)
  child = int(ready.read_text())
  process.send_signal(signal.SIGTERM)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGTERM
  deadline = time.monotonic() + 30
  while _alive(child) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not _alive(child)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_a_result_that_cannot_be_pickled_is_an_error_that_says_so():
  with pytest.raises(RuntimeError, match='returned a value that cannot be pickled'):
    own_process.call(threading.Lock)
