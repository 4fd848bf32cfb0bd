"""The folder lock: one holder at a time, and a killed holder leaves no stale lock."""

import os
import signal
import subprocess
import sys

import pytest

from d3d_core import folder_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with folder_lock.hold(str(tmp_path), 'training'):
    with pytest.raises(folder_lock.FolderLockedError, match=f'in use by a running training \\(pid {os.getpid()}'):
      with folder_lock.hold(str(tmp_path), 'training'):
        pass
  with folder_lock.hold(str(tmp_path), 'training'):  # released at the end of the block
    pass


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\nfrom d3d_core import folder_lock\n'
       f'with folder_lock.hold({str(tmp_path)!r}, "conversion"):\n  print("held", flush=True)\n  time.sleep(600)'],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(folder_lock.FolderLockedError, match=f'conversion \\(pid {holder.pid}'):
      with folder_lock.hold(str(tmp_path), 'conversion'):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with folder_lock.hold(str(tmp_path), 'conversion'):
    pass
