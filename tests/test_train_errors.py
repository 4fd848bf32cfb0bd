"""`python -m official_d3d.train` at its edges: each mistake is one `error:` line, and nothing is lost or locked.

Every case runs the command line on tiny real records, as a user would meet it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import training_records
from d3d_core import folder_lock
from d3d_core import label_map
from official_d3d import train_lib
from official_d3d.modeling import factory

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGFILE = os.path.join(REPO, 'official_d3d', 'configs', 'experiments', 'tiny_cpu.flags')


@pytest.fixture(scope='module')
def records(tmp_path_factory, bikes_video):
  return training_records.write_records(tmp_path_factory.mktemp('records'), bikes_video)


def train_command(model_dir, records, *extra):
  """The tiny flagfile on `records`: a flow teacher, 2 steps of 4-frame 32-pixel clips, no evaluation."""
  return [sys.executable, '-m', 'official_d3d.train', f'--flagfile={TINY_FLAGFILE}', f'--model_dir={model_dir}',
          f'--train_pattern={records["train"]}', f'--eval_pattern={records["eval"]}',
          f'--label_map={records["label_map"]}', '--num_frames=4', '--stride=2', '--crop_size=32',
          f'--train_resize_range={training_records.HEIGHT},{training_records.WIDTH}',
          f'--eval_resize={training_records.HEIGHT}', '--global_batch_size=2', '--train_steps=2',
          '--steps_per_loop=2', '--warmup_steps=0', '--mode=train', *extra]


def run_train(model_dir, records, *extra):
  return subprocess.run(train_command(model_dir, records, *extra), cwd=REPO, capture_output=True, text=True,
                        check=False, timeout=600)


def assert_one_error_line(process, *fragments):
  """Exit status 1, no traceback, and an `error:` line holding every fragment."""
  assert process.returncode == 1, process.stderr[-3000:]
  assert 'Traceback' not in process.stderr, process.stderr[-3000:]
  errors = [line for line in process.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, process.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_after_it(records, tmp_path):
  model_dir = tmp_path / 'diverged'
  process = run_train(model_dir, records, '--learning_rate=1e30', '--warmup_steps=0', '--train_steps=6',
                       '--mode=train_and_eval')
  line = assert_one_error_line(process, 'training diverged at step')
  failed_step = int(line.split('at step ')[1].split(':')[0])
  assert 'the loss is nan' in line or 'some weights are no longer finite' in line
  assert not (model_dir / train_lib.EVAL_METRICS_FILENAME).exists()
  for index in model_dir.glob('ckpt-*.index'):  # whatever was saved is from before the loss left the reals
    assert int(index.name[len('ckpt-'):-len('.index')]) < failed_step
  if list(model_dir.glob('ckpt-*.index')):
    network, _ = factory.restore_network(str(model_dir))
    assert all(np.all(np.isfinite(weight.numpy())) for weight in network.weights)


def test_a_label_outside_the_label_map_stops_the_run_naming_the_record(records, tmp_path):
  short_map = tmp_path / 'two_classes.txt'
  label_map.write_label_map(training_records.CLASS_NAMES[:2], str(short_map))
  # A third of the videos hold label 2; 40 shuffled clips surely reach one, whichever comes first.
  process = run_train(tmp_path / 'run', records, f'--label_map={short_map}', '--train_steps=20')
  assert_one_error_line(process, os.path.dirname(records['train']), '.tfrecord: video bikes_',
                        f'label 2 is outside the 2 classes of {short_map}')
  assert not (tmp_path / 'run' / 'ckpt-20.index').exists()


def test_a_failed_start_leaves_the_model_dir_free_for_the_corrected_command(records, tmp_path):
  model_dir = tmp_path / 'run'
  missing_teacher = tmp_path / 'no_such_teacher'
  assert_one_error_line(run_train(model_dir, records, '--stream=d3d', f'--teacher_checkpoint={missing_teacher}'),
                        str(missing_teacher))
  typo = records['train'].replace('train-', 'trian-')
  assert_one_error_line(run_train(model_dir, records, f'--train_pattern={typo}'), typo, 'matches no files')
  assert_one_error_line(run_train(model_dir, records, '--global_batch_size=0'),
                        'data.global_batch_size must be positive, got 0')
  assert not os.path.exists(model_dir / 'config.json')
  process = run_train(model_dir, records, '--learning_rate=0.01')
  assert process.returncode == 0, process.stderr[-3000:]
  assert (model_dir / 'config.json').exists() and (model_dir / 'ckpt-2.index').exists()


def test_a_model_dir_held_by_a_live_training_is_refused(records, tmp_path):
  model_dir = tmp_path / 'busy'
  model_dir.mkdir()
  with folder_lock.hold(str(model_dir), 'training'):
    process = run_train(model_dir, records)
  assert_one_error_line(process, f'{model_dir} is in use by a running training (pid {os.getpid()}')
  assert not (model_dir / 'config.json').exists()


def test_records_without_flow_are_named_for_a_flow_teacher(tmp_path, bikes_video):
  rgb_only = training_records.write_records(tmp_path / 'rgb_only', bikes_video, with_flow=False)
  process = run_train(tmp_path / 'run', rgb_only)
  assert_one_error_line(process, str(tmp_path / 'rgb_only' / 'train-00000.tfrecord'), 'no flow frames',
                        'FORWARD_FLOW/image/encoded')


def test_a_truncated_shard_is_named(records, tmp_path):
  copy = tmp_path / 'records'
  shutil.copytree(os.path.dirname(records['train']), copy)
  shard = copy / 'train-00001.tfrecord'
  shard.write_bytes(shard.read_bytes()[:-100])  # its last record loses its end, as in an interrupted copy
  copied = {name: str(copy / os.path.basename(path)) for name, path in records.items()}
  process = run_train(tmp_path / 'run', copied)
  assert_one_error_line(process, f'{shard}: record 2 is corrupt or truncated')


def test_ctrl_c_says_how_to_resume_and_keeps_the_checkpoints(records, tmp_path):
  """(Resuming from them is test_train's `test_interrupted_run_resumes_from_its_checkpoint_to_the_final_step`.)"""
  model_dir = tmp_path / 'run'
  process = subprocess.Popen(train_command(model_dir, records, '--train_steps=200'), cwd=REPO,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (model_dir / 'ckpt-2.index').exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert stderr.splitlines()[-1] == 'interrupted: rerun the same command to resume from the last checkpoint'
  assert 'Traceback' not in stderr
  assert (model_dir / 'ckpt-2.index').exists() and (model_dir / 'config.json').exists()
