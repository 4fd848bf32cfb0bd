"""An exclusive lock on a folder, so that two runs never write into one folder at once.

The lock is `fcntl.flock` on `<folder>/.lock`: the operating system releases it when the holding process ends,
however it ends, so a killed run leaves no stale lock behind. The file records the holder (pid, host) for the
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
  """Another live process holds the folder, or the folder cannot be locked at all."""


@contextlib.contextmanager
def hold(folder: str, purpose: str) -> Iterator[None]:
  """Holds `folder` (which must exist) for the `with` block; raises FolderLockedError if a live process holds it.

  `purpose` names the work in the refusal, e.g. 'training' or 'conversion'.
  """
  if '://' in folder:
    yield
    return
  try:
    lock_file = open(os.path.join(folder, LOCK_FILENAME), 'a+', encoding='utf-8')
  except OSError as error:
    raise FolderLockedError(f'{folder} is not writable ({error.strerror})') from None
  with lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock_file.seek(0)
      holder = lock_file.read().strip() or 'a process that has not said which'
      raise FolderLockedError(f'{folder} is in use by a running {purpose} ({holder}): wait for it to end, or use '
                              'another folder') from None
    except OSError as error:  # a file system without locks
      raise FolderLockedError(f'{folder} cannot be locked ({error.strerror})') from None
    lock_file.truncate(0)
    lock_file.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    lock_file.flush()
    yield  # the lock ends when the file closes
