"""`--distribution_strategy=multi_worker_mirrored` for real: two `python -m official_d3d.train` processes on localhost
ports, each told its place by TF_CONFIG, as two machines would be; one is killed along the way and both restarted.

The run must end where a one-process run ends. For the two to be comparable every global batch holds the same two
clips however the input is split: two shards of one video each (worker i reads shard i), frames already at the crop
size, clips as long as the videos, no flip, a shuffle buffer of 1; both start from the same weights (init_checkpoint).
The one-process run is mirrored over two logical CPUs, one clip per replica as one per worker: batch norm normalises
each replica's clips, so a one-device run on a batch of two would be another computation. As the workers see
different videos of different classes, a step that did not sum their gradients would end elsewhere.
"""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import real_clips
from d3d_core import label_map
from official_d3d import callbacks
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory
from tfrecord_tools import flow_backends
from tfrecord_tools import sequence_example

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGFILE = os.path.join(REPO, 'official_d3d', 'configs', 'experiments', 'tiny_cpu.flags')
# 64 pixels leave S3D-G's last block 2x2: at 32 it is 1x1, where batch norm of one clip outputs its offset alone and
# nothing trains.
SIZE = 64
NUM_FRAMES = 4
TRAIN_STEPS = 6
MODEL = d3d_config.ModelConfig(depth_multiplier=0.1, min_depth=8, dropout_rate=0.0,
                               pixel_range=d3d_config.DEFAULT_PIXEL_RANGE)
LAUNCH_TIMEOUT = 600  # seconds for one start of the workers: a 2-core machine shared with other tests is slow
LOST_WORKER_TIMEOUT = 60  # seconds the survivor gets to stop on its own before it is killed

# The one-process run: `python -m official_d3d.train` with the mirrored strategy over two logical CPUs.
ONE_PROCESS = textwrap.dedent('''
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from absl import app
    from official_d3d import train, train_lib
    train_lib.STRATEGIES['mirrored'] = lambda train_config: tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    train.define_flags()
    app.run(train.main)
''')


def write_one_video_shards(root, video):
  """`clip-0000i.tfrecord` holding video i (class i) of two consecutive cuts of a real video, and the label map."""
  os.makedirs(root, exist_ok=True)
  frames = real_clips.read_frames(video, 2 * NUM_FRAMES, SIZE, SIZE)
  names = ('first_cut', 'second_cut')
  for index, name in enumerate(names):
    clip = frames[index * NUM_FRAMES:(index + 1) * NUM_FRAMES]
    example = sequence_example.build_sequence_example(
        media_id=name, label_index=index, label_string=name, frames=clip,
        timestamps_us=[40000 * t for t in range(NUM_FRAMES)], frame_rate=25.0,
        flow=flow_backends.OpenCVFarneback().video_flow(clip))
    with tf.io.TFRecordWriter(os.path.join(root, f'clip-{index:05d}.tfrecord')) as writer:
      writer.write(example.SerializeToString())
  label_map.write_label_map(names, os.path.join(root, label_map.FILENAME))


def write_start_weights(folder) -> str:
  """A freshly initialised flow network as `start.weights.h5` + `start.json` (the imported-weights layout)."""
  path = os.path.join(folder, 'start.weights.h5')
  factory.build_s3dg(MODEL, 2, input_channels=2).save_weights(path)
  with open(os.path.join(folder, 'start.json'), 'w') as f:
    json.dump({'model': dataclasses.asdict(MODEL), 'num_classes': 2, 'input_channels': 2}, f)
  return path


def train_flags(records, model_dir, start_weights, *extra):
  return [f'--flagfile={TINY_FLAGFILE}', f'--model_dir={model_dir}', f'--init_checkpoint={start_weights}',
          f'--train_pattern={records}/clip-*', f'--eval_pattern={records}/clip-*',
          f'--label_map={records}/{label_map.FILENAME}', '--stream=flow', '--mode=train_and_eval',
          f'--depth_multiplier={MODEL.depth_multiplier}', f'--min_depth={MODEL.min_depth}',
          f'--dropout_rate={MODEL.dropout_rate}', f'--num_frames={NUM_FRAMES}', '--stride=1', f'--crop_size={SIZE}',
          f'--train_resize_range={SIZE},{SIZE}', f'--eval_resize={SIZE}', '--random_flip=false',
          '--shuffle_buffer=1', '--deterministic=true', '--global_batch_size=2', '--eval_batch_size=2',
          '--num_eval_clips=1', '--num_eval_crops=1', '--schedule=constant', '--warmup_steps=0',
          f'--train_steps={TRAIN_STEPS}', '--steps_per_loop=2', '--jit_compile=false', *extra]


def free_ports(count):
  """Ports free on localhost now (all held at once while chosen, so that they differ)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(ports, index):
  return json.dumps({'cluster': {'worker': [f'localhost:{port}' for port in ports]},
                     'task': {'type': 'worker', 'index': index}})


def start_workers(flags, ports, log_prefix):
  """One training process per port, the same command with its own TF_CONFIG; stderr to `<log_prefix><i>.log`."""
  processes = []
  for index in range(len(ports)):
    with open(f'{log_prefix}{index}.log', 'w') as log:
      processes.append(subprocess.Popen(
          [sys.executable, '-m', 'official_d3d.train', *flags], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
          env=dict(os.environ, TF_CONFIG=tf_config(ports, index))))
  return processes


def log_tail(path, characters=3000):
  with open(path) as f:
    return f.read()[-characters:]


def wait_for(processes, log_prefix, deadline):
  """Exit statuses of all processes; fails (with their logs) when one is still running at the deadline."""
  for index, process in enumerate(processes):
    try:
      process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      pytest.fail(f'worker {index} still running after {LAUNCH_TIMEOUT} s:\n{log_tail(f"{log_prefix}{index}.log")}')
  return [process.returncode for process in processes]


def kill(processes):
  for process in processes:
    if process.poll() is None:
      process.kill()
    process.wait()


def train_killed_and_restarted(flags, model_dir, log_dir):
  """Two workers to the first checkpoint; worker 1 is killed (SIGKILL), the chief given LOST_WORKER_TIMEOUT to stop
  and killed if it has not; then both restart with the same command and ports and run to the end.

  Returns {'chief_after_loss': the chief's exit status when it stopped on its own (None: killed),
  'latest_at_restart': the checkpoint the restart should resume from, 'statuses': the restarted workers' exit
  statuses, 'logs': their log paths, 'first_chief_log': the chief's log of the first start}.
  """
  ports = free_ports(2)
  first, second = os.path.join(log_dir, 'first_'), os.path.join(log_dir, 'restarted_')
  processes = start_workers(flags, ports, first)
  try:
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not tf.train.latest_checkpoint(model_dir):
      if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
        pytest.fail('no checkpoint from the first start:\n' + '\n'.join(log_tail(f'{first}{i}.log') for i in (0, 1)))
      time.sleep(0.1)
    processes[1].send_signal(signal.SIGKILL)
    try:
      chief_after_loss = processes[0].wait(timeout=LOST_WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
      chief_after_loss = None
  finally:
    kill(processes)
  latest_at_restart = tf.train.latest_checkpoint(model_dir)
  processes = start_workers(flags, ports, second)
  try:
    statuses = wait_for(processes, second, time.monotonic() + LAUNCH_TIMEOUT)
  finally:
    kill(processes)
  return {'chief_after_loss': chief_after_loss, 'latest_at_restart': latest_at_restart, 'statuses': statuses,
          'logs': [f'{second}{i}.log' for i in (0, 1)], 'first_chief_log': f'{first}0.log'}


@pytest.fixture(scope='module')
def runs(tmp_path_factory, bikes_video):
  """The same training as a two-worker run (killed and restarted once) and as a one-process run."""
  root = tmp_path_factory.mktemp('multi_worker')
  records = str(root / 'records')
  write_one_video_shards(records, bikes_video)
  start_weights = write_start_weights(str(root))
  one_process_dir = str(root / 'one_process')
  process = subprocess.run(
      [sys.executable, '-c', ONE_PROCESS, *train_flags(records, one_process_dir, start_weights),
       '--distribution_strategy=mirrored', '--mode=train'],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=LAUNCH_TIMEOUT)
  assert process.returncode == 0, process.stderr[-3000:]
  multi_worker_dir = str(root / 'multi_worker')
  multi_worker = train_killed_and_restarted(
      train_flags(records, multi_worker_dir, start_weights, '--distribution_strategy=multi_worker_mirrored',
                  '--verbosity=0'),  # INFO: the resumed step
      multi_worker_dir, str(root))
  return {'one_process': one_process_dir, 'multi_worker': multi_worker_dir, 'start': start_weights, **multi_worker}


def test_a_lost_worker_stops_the_run_and_the_restarted_workers_resume_from_the_last_checkpoint(runs):
  assert runs['statuses'] == [0, 0], '\n'.join(log_tail(path) for path in runs['logs'])
  if runs['chief_after_loss'] is not None:  # else it waited on the lost worker and was killed
    assert runs['chief_after_loss'] == 1
    assert 'error: a worker of this multi-worker run stopped answering' in log_tail(runs['first_chief_log'])
    assert 'start every worker again with the same command; they resume from ' in log_tail(runs['first_chief_log'])
  model_dir = runs['multi_worker']
  resumed = []
  for path in runs['logs']:
    with open(path) as f:
      resumed += re.findall(r'Resumed from (\S+) at step (\d+)', f.read())
  # Both workers from the chief's last checkpoint when they restarted.
  assert resumed == [(runs['latest_at_restart'], resumed[0][1])] * 2
  assert runs['latest_at_restart'].endswith(f'ckpt-{resumed[0][1]}') and 2 <= int(resumed[0][1]) < TRAIN_STEPS
  assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, f'ckpt-{TRAIN_STEPS}')
  history = callbacks.read_history(os.path.join(model_dir, callbacks.HISTORY_FILENAME))
  assert [entry['step'] for entry in history] == list(range(2, TRAIN_STEPS + 1, 2))


def test_only_the_chief_writes_the_run_into_model_dir(runs):
  model_dir = runs['multi_worker']
  checkpoints = {f'ckpt-{step}.{suffix}' for step in range(2, TRAIN_STEPS + 1, 2)
                 for suffix in ('index', 'data-00000-of-00001')}
  assert set(os.listdir(model_dir)) == {
      '.lock', 'checkpoint', *checkpoints, d3d_config.CONFIG_FILENAME, train_lib.EVAL_METRICS_FILENAME,
      callbacks.HISTORY_FILENAME, train_lib.LOGS_DIRNAME, 'workers'}
  assert sorted(os.listdir(os.path.join(model_dir, train_lib.LOGS_DIRNAME))) == ['eval', 'train']
  # The other worker saves too (saving is collective), into its scratch folder, which nothing reads back.
  scratch = os.path.join(model_dir, 'workers', 'worker_1')
  assert os.listdir(os.path.join(model_dir, 'workers')) == ['worker_1']
  # A save the killed worker left unfinished (ckpt-N_temp) is deleted when it starts again.
  assert set(os.listdir(scratch)) <= {'checkpoint', *checkpoints, train_lib.LOGS_DIRNAME}
  assert os.listdir(os.path.join(scratch, train_lib.LOGS_DIRNAME)) == ['train']
  with open(os.path.join(model_dir, train_lib.EVAL_METRICS_FILENAME)) as f:
    metrics = json.load(f)
  assert metrics['step'] == TRAIN_STEPS and metrics['num_videos'] == 2  # each worker's video, gathered


def comparable_variables(prefix):
  """{name: value} of a training checkpoint's numbers, but the batch-norm moving statistics: Keras 3 keeps each
  replica's own (the chief saves those of its clips), so they differ between workers by design."""
  reader = tf.train.load_checkpoint(prefix)
  values = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix) if 'moving_' not in name}
  return {name: value for name, value in values.items() if isinstance(value, np.ndarray) and value.dtype != object}


def test_multi_worker_training_ends_where_one_process_ends_with_the_same_global_batches(runs):
  final = f'ckpt-{TRAIN_STEPS}'
  chief = comparable_variables(os.path.join(runs['multi_worker'], final))
  other_worker = comparable_variables(os.path.join(runs['multi_worker'], 'workers', 'worker_1', final))
  one_process = comparable_variables(os.path.join(runs['one_process'], final))
  assert set(chief) == set(one_process) == set(other_worker)
  assert sum(name.startswith('network/') for name in chief) > 150  # the network's weights, with the optimizer's
  for name, value in chief.items():
    np.testing.assert_allclose(value, one_process[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(value, other_worker[name], err_msg=name)  # one all-reduced update on both
  start, _ = factory.restore_network(runs['start'])
  trained, _ = factory.restore_network(runs['multi_worker'])
  moved = max(np.max(np.abs(a.numpy() - b.numpy())) for a, b in zip(start.trainable_weights, trained.trainable_weights))
  assert moved > 0.01  # training moved the weights far beyond the tolerance
  losses = {name: [entry['loss'] for entry in callbacks.read_history(os.path.join(runs[name],
                                                                                   callbacks.HISTORY_FILENAME))]
            for name in ('multi_worker', 'one_process')}
  np.testing.assert_allclose(losses['multi_worker'], losses['one_process'], rtol=1e-5)


def test_a_restarted_worker_deletes_the_saves_it_left_unfinished(tmp_path):
  scratch = tmp_path / 'workers' / 'worker_1'
  (scratch / 'ckpt-4_temp' / 'part-00000-of-00001').mkdir(parents=True)
  (scratch / 'ckpt-2.index').write_text('a finished save')
  train_lib.remove_unfinished_saves(str(scratch))
  assert os.listdir(scratch) == ['ckpt-2.index']
