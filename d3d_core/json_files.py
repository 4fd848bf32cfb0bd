"""Files written whole or not at all, on local disks and `gs://` alike: a reader, or a run resuming after a kill,
finds the previous version or the new one, never half of one.

The writer works under a hidden temporary name next to the file, unique to the process and call, so concurrent or
killed writers never share one; a killed writer's temporary ends in TEMPORARY_SUFFIX, for the folder's owner to remove.
"""

import contextlib
import json
import os
import secrets
from typing import Any, Iterator

import tensorflow as tf

TEMPORARY_SUFFIX = '.incomplete'


def temporary_path(path: str) -> str:
  """A hidden name next to `path` (so globs of the folder's files miss it) that only this call uses."""
  folder, name = os.path.split(path)
  return os.path.join(folder, f'.{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMPORARY_SUFFIX}')


@contextlib.contextmanager
def written_atomically(path: str) -> Iterator[str]:
  """Yields a temporary path to write `path` under: renamed to `path` when the block succeeds, removed when not."""
  temporary = temporary_path(path)
  try:
    yield temporary
  except BaseException:
    with contextlib.suppress(OSError, tf.errors.OpError):
      tf.io.gfile.remove(temporary)
    raise
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json(path: str, value: Any) -> None:
  """`value` as indented JSON with sorted keys (stable, diffable files), replacing `path` atomically."""
  with written_atomically(path) as temporary, tf.io.gfile.GFile(temporary, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')


def read_json(path: str) -> Any:
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
