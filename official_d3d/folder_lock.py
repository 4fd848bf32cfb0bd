"""An exclusive lock on a folder, so that two runs never write into one folder at once.

The lock is `fcntl.flock` on `<folder>/.lock`: the operating system releases it when the holding process ends,
however it ends, so a killed run leaves no stale lock behind. The file records the holder (host, pid) for the
message a refused run prints. Local and network file systems that support flock are covered; object stores
(gs://, s3://) have no locks, and a folder there is not locked.
"""

import contextlib
import fcntl
import os
import socket
from typing import Iterator

LOCK_FILENAME = '.lock'


class FolderLockedError(RuntimeError):
  """Another live process holds the folder."""


def _is_local(folder: str) -> bool:
  return '://' not in folder


@contextlib.contextmanager
def hold(folder: str, purpose: str) -> Iterator[None]:
  """Holds `folder` (created if missing) for the `with` block; raises FolderLockedError if a live process holds it.

  `purpose` names the work in the refusal, e.g. 'training' or 'conversion'.
  """
  if not _is_local(folder):
    yield
    return
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, LOCK_FILENAME)
  with open(path, 'a+') as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock_file.seek(0)
      holder = lock_file.read().strip() or 'another process'
      raise FolderLockedError(f'{folder} is in use by a running {purpose} ({holder}): wait for it to end, or use '
                              'another folder') from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    lock_file.flush()
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)
