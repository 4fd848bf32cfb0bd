"""JSON files are written whole or not at all, under names that neither globs nor other writers meet."""

import json
import os

import pytest

from d3d_core import json_files


def test_a_value_reads_back_as_written_in_a_stable_form(tmp_path):
  path = str(tmp_path / 'settings.json')
  json_files.write_json(path, {'b': [1, 2.5, 'x'], 'a': {'nested': True}})
  assert json_files.read_json(path) == {'a': {'nested': True}, 'b': [1, 2.5, 'x']}
  text = (tmp_path / 'settings.json').read_text()
  assert text == json.dumps({'a': {'nested': True}, 'b': [1, 2.5, 'x']}, indent=2, sort_keys=True) + '\n'
  assert os.listdir(tmp_path) == ['settings.json']  # no temporary left behind


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'report.json')
  json_files.write_json(path, {'version': 1})
  with pytest.raises(TypeError):
    json_files.write_json(path, {'version': 2, 'unserialisable': object()})
  assert json_files.read_json(path) == {'version': 1}
  assert os.listdir(tmp_path) == ['report.json']


def test_temporaries_are_hidden_unique_and_end_in_the_suffix_a_folder_owner_removes(tmp_path):
  path = str(tmp_path / 'train-00000-of-00002.tfrecord')
  first, second = json_files.temporary_path(path), json_files.temporary_path(path)
  assert first != second
  for temporary in (first, second):
    assert os.path.dirname(temporary) == str(tmp_path)  # same folder: the rename stays on one file system
    name = os.path.basename(temporary)
    assert name.startswith('.train-00000-of-00002.tfrecord.') and name.endswith(json_files.TEMPORARY_SUFFIX)


def test_written_atomically_renames_on_success_and_removes_on_failure(tmp_path):
  path = tmp_path / 'shard.tfrecord'
  with json_files.written_atomically(str(path)) as temporary:
    with open(temporary, 'wb') as f:
      f.write(b'complete')
    assert not path.exists()  # readers see nothing until the block succeeds
  assert path.read_bytes() == b'complete'
  with pytest.raises(KeyboardInterrupt):
    with json_files.written_atomically(str(path)) as temporary:
      with open(temporary, 'wb') as f:
        f.write(b'half')
      raise KeyboardInterrupt
  assert path.read_bytes() == b'complete' and os.listdir(tmp_path) == ['shard.tfrecord']
