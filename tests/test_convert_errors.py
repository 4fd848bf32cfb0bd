"""`python -m tfrecord_tools.convert` answers a user's mistake, a broken environment or Ctrl-C with one line, the
documented exit status, and nothing lost: what was converted stays, and a rerun finishes the job."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess

import pytest

import test_convert
from d3d_core import cli as command_line
from d3d_core import schema

from tfrecord_tools import cli
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

PAGE_BYTES = 4096  # tmpfs sizes and file sizes count in pages


@pytest.fixture(scope='module')
def clips(tmp_path_factory, bikes_video):
  """Six one-second clips of a real video, converted in-process into six shards: the result each test expects."""
  folder = tmp_path_factory.mktemp('clips')
  csv_path = test_convert.write_csv(folder / 'clips.csv', [(bikes_video, 'bike', start, start + 1)
                                                           for start in range(6)])
  config = test_convert.make_config(csv_path, folder / 'clean', num_shards=6,
                                    flow=flow_backends.FlowConfig(backend='farneback'))
  convert_lib.run_local(config)
  return config


def respecting_permissions():
  """A command prefix under which file permissions apply: root ignores them unless it gives up these capabilities."""
  if os.geteuid() != 0:
    return []
  prefix = ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--']
  if shutil.which('setpriv') is None or subprocess.run(prefix + ['true'], check=False).returncode:
    pytest.skip('needs setpriv, so that root meets an unreadable file as a user does')
  return prefix


def on_a_small_disk(mount_point, size_bytes):
  """A command prefix that runs the command with a tmpfs of `size_bytes` on `mount_point`, then lists that folder."""
  probe = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs tmpfs "$0"', str(mount_point)],
                         capture_output=True, check=False) if shutil.which('unshare') else None
  if probe is None or probe.returncode:
    pytest.skip('needs unshare and a tmpfs mount in a user namespace, to fill a small disk')
  script = f'mount -t tmpfs -o size={size_bytes} tmpfs "$0" || exit 99; "$@"; status=$?; ls -A "$0"; exit $status'
  return ['unshare', '-rm', 'sh', '-c', script, str(mount_point)]


def run(args, prefix=()):
  """Runs the converter to its end: (exit status, stdout, stderr)."""
  process = test_convert.run_cli(args, prefix=prefix)
  stdout, stderr = process.communicate(timeout=300)
  return process.returncode, stdout, stderr


@pytest.mark.parametrize('kind', ['file', 'read_only'])
def test_an_unusable_output_folder_is_one_error_line(tmp_path, clips, kind):
  output = tmp_path / 'out'
  if kind == 'file':
    output.write_text('my notes')
    problem, prefix = 'is a file, not a folder', ()
  else:
    output.mkdir(mode=0o555)
    problem, prefix = 'is not writable (Permission denied)', respecting_permissions()
  config = dataclasses.replace(clips, output_dir=str(output))

  status, _, stderr = run(test_convert.cli_args(config), prefix=prefix)

  assert status == cli.EXIT_ERROR
  assert test_convert.error_lines(stderr) == [f'error: output folder {output} {problem}']
  if kind == 'file':
    assert output.read_text() == 'my notes'
  else:
    assert not list(output.iterdir())


def test_an_unreadable_csv_is_one_error_line_and_status_2(tmp_path, clips):
  """Status 2, not 1: no video was skipped, the job could not start (test_manifests names the other CSV errors)."""
  csv_path = tmp_path / 'list.csv'
  shutil.copy(clips.source.input, csv_path)
  csv_path.chmod(0)
  config = test_convert.make_config(csv_path, tmp_path / 'out')

  status, _, stderr = run(test_convert.cli_args(config), prefix=respecting_permissions())

  assert status == cli.EXIT_ERROR
  assert test_convert.error_lines(stderr) == [f'error: {csv_path}: cannot be read (Permission denied)']
  assert not list((tmp_path / 'out').glob('*.tfrecord'))


def test_an_unreadable_video_is_one_skipped_video_and_the_rest_is_written(tmp_path, bikes_video):
  secret = tmp_path / 'secret.mp4'
  shutil.copy(bikes_video, secret)
  secret.chmod(0)
  csv_path = test_convert.write_csv(tmp_path / 'list.csv', [(bikes_video, 'bike', 0, 1), (secret, 'bike', 0, 1)])
  config = test_convert.make_config(csv_path, tmp_path / 'out', num_shards=1,
                                    flow=flow_backends.FlowConfig(backend='farneback'))

  status, _, stderr = run(test_convert.cli_args(config), prefix=respecting_permissions())

  assert status == cli.EXIT_SKIPPED and not test_convert.error_lines(stderr)
  reason = f'{secret}: cannot be read (Permission denied)'
  [warning] = [line for line in stderr.splitlines() if secret.name in line]
  assert warning.endswith(f'] Skipped {reason}')
  report = json.loads(pathlib.Path(convert_lib.report_path(config.output_dir, 'clips')).read_text())
  assert [f['reason'] for f in report['failures']] == [reason]
  [[record]] = test_convert.read_shards(config.output_dir, 'clips', 1)
  assert test_convert.parse(record)[schema.DATA_PATH] == str(bikes_video).encode()


def test_a_full_disk_names_the_shard_and_keeps_the_finished_ones(tmp_path, clips):
  pages = [-(-os.path.getsize(p) // PAGE_BYTES) for p in convert_lib.shard_paths(clips.output_dir, 'clips', 6)]
  # Lock file, label map and settings, the first shard and its marker, and half the second shard.
  size_bytes = PAGE_BYTES * (3 + pages[0] + 1 + pages[1] // 2)
  disk = tmp_path / 'disk'
  disk.mkdir()
  config = dataclasses.replace(clips, output_dir=str(disk))

  status, stdout, stderr = run(test_convert.cli_args(config), prefix=on_a_small_disk(disk, size_bytes))

  assert status == cli.EXIT_ERROR
  [line] = test_convert.error_lines(stderr)
  match = re.fullmatch(rf'error: {disk}/clips-0000(\d)-of-00006\.tfrecord: cannot be written \(No space left on '
                       r'device\)', line)
  assert match, line
  failed = int(match[1])
  left_on_disk = stdout.split()
  shards = [pathlib.Path(p).name for p in convert_lib.shard_paths(str(disk), 'clips', 6)]
  finished = [name for name in shards if name in left_on_disk]
  assert finished == shards[:failed] and failed >= 1  # each with its marker, which makes it checkable on a rerun
  assert all(f'.{name}.done.json' in left_on_disk for name in finished)
  assert not [name for name in left_on_disk if name.endswith('.incomplete')]


def test_ctrl_c_stops_the_workers_quietly_and_a_rerun_resumes(tmp_path, clips):
  config = dataclasses.replace(clips, output_dir=str(tmp_path / 'out'), num_workers=2)
  process = test_convert.run_cli(test_convert.cli_args(config), start_new_session=True)
  first_shard = pathlib.Path(convert_lib.shard_paths(config.output_dir, 'clips', 6)[0])
  test_convert.wait_for(first_shard.exists, process)
  os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal does: to the command and its worker processes
  _, stderr = process.communicate(timeout=120)

  assert process.returncode == cli.EXIT_INTERRUPTED
  assert 'interrupted: rerun the same command to resume' in stderr.splitlines()
  assert 'KeyboardInterrupt' not in stderr and not test_convert.error_lines(stderr)
  output = pathlib.Path(config.output_dir)
  assert not list(output.glob('.*.incomplete'))
  assert len(list(output.glob('clips-*.tfrecord'))) < 6, 'Ctrl-C should land in the middle of the job'

  report = convert_lib.run_local(config)

  assert test_convert.read_shards(output, 'clips', 6) == test_convert.read_shards(clips.output_dir, 'clips', 6)
  assert 0 < report['frames_this_run'] < report['frames_written'] == 30


@pytest.mark.parametrize('error, status, last_line', [
    (convert_lib.ConversionSetupError('output folder o is in use'), cli.EXIT_ERROR,
     'error: output folder o is in use'),
    (PermissionError(13, 'Permission denied', 'label_map.txt'), cli.EXIT_ERROR,
     'error: label_map.txt: Permission denied'),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, 'interrupted: rerun the same command to resume'),
    (ZeroDivisionError('division by zero'), cli.EXIT_ERROR,
     'error: ZeroDivisionError: division by zero (a bug: the traceback above is for reporting it)'),
])
@pytest.mark.parametrize('traceback_variable', ['', '1'])
def test_errors_are_one_line_unless_d3d_traceback_asks_for_the_traceback(monkeypatch, capsys, error, status,
                                                                          last_line, traceback_variable):
  def command():
    raise error

  monkeypatch.setenv(command_line.TRACEBACK_VARIABLE, traceback_variable)

  assert command_line.run(command, (convert_lib.ConversionError,), 'rerun the same command to resume',
                          error_status=cli.EXIT_ERROR) == status
  stderr = capsys.readouterr().err
  assert stderr.splitlines()[-1] == last_line
  bug = isinstance(error, ZeroDivisionError)
  assert ('Traceback' in stderr) == (bug or traceback_variable == '1')  # a bug always shows where it is
