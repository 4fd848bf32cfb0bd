"""Training input through a tf.data service on this machine: a dispatcher and two workers in the test process.

The records make every clip a function of its video alone (clips as long as the videos, crops the size of the
frames, no flips), so that clips read through the service can be matched with those of the local pipeline whatever
their order and per-example seeds.
"""

import collections
import dataclasses
import gc
import logging
import socket
import threading
import time

import pytest
import tensorflow as tf

import real_clips
from official_d3d.configs import config_flags
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import data_service
from official_d3d.dataloaders import video_input
from tfrecord_tools import sequence_example

SIZE = 16
NUM_FRAMES = 4
NUM_VIDEOS = 6
NUM_CLASSES = 3


@pytest.fixture(scope='module')
def train_pattern(tmp_path_factory, bikes_video):
  """One video per file, so that the dispatcher can hand each to a different worker."""
  root = tmp_path_factory.mktemp('service_records')
  frames = real_clips.read_frames(bikes_video, NUM_VIDEOS * NUM_FRAMES, SIZE, SIZE)
  for index in range(NUM_VIDEOS):
    example = sequence_example.build_sequence_example(
        media_id=f'bikes_{index}', label_index=index % NUM_CLASSES, label_string=f'class_{index % NUM_CLASSES}',
        frames=frames[index * NUM_FRAMES:(index + 1) * NUM_FRAMES],
        timestamps_us=[40000 * t for t in range(NUM_FRAMES)], frame_rate=25.0)
    with tf.io.TFRecordWriter(str(root / f'train-{index:05d}.tfrecord')) as writer:
      writer.write(example.SerializeToString())
  return str(root / 'train-*')


@pytest.fixture(scope='module')
def cluster():
  dispatcher = data_service.start_dispatcher()
  address = dispatcher.target.split('://', 1)[1]
  workers = [data_service.start_worker(address, host='localhost') for _ in range(2)]
  yield address, workers
  for worker in workers:
    worker.stop()
  dispatcher.stop()


def data_config(train_pattern, **overrides):
  return d3d_config.DataConfig(train_pattern=train_pattern, num_classes=NUM_CLASSES, num_frames=NUM_FRAMES, stride=1,
                               crop_size=SIZE, train_resize_range=(SIZE, SIZE), random_flip=False, global_batch_size=2,
                               shuffle_buffer=4, **overrides)


def clips(dataset, num_batches):
  """(label, clip bytes) of the first `num_batches` batches."""
  found = []
  for features, labels in dataset.take(num_batches):
    found += [(int(label), clip.tobytes()) for label, clip in zip(labels.numpy(), features['rgb'].numpy())]
  return found


def free_port():
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def test_the_flag_fills_the_setting_and_a_dead_address_fails_in_seconds(train_pattern, monkeypatch):
  flag_values = config_flags.flags.FlagValues()
  config_flags.define_flags(flag_values)
  flag_values(['train', '--tf_data_service=localhost:5050'])
  assert config_flags.config_from_flags(flag_values).data.tf_data_service == 'localhost:5050'

  monkeypatch.setattr(data_service, 'CONNECT_TIMEOUT_S', 1.0)
  start = time.monotonic()
  address = f'localhost:{free_port()}'
  with pytest.raises(d3d_config.ConfigError, match=f'data.tf_data_service={address!r}: no tf.data service dispatcher'):
    video_input.build_train_dataset(data_config(train_pattern, tf_data_service=address), ('rgb',))
  assert time.monotonic() - start < 10
  with pytest.raises(d3d_config.ConfigError, match='data.deterministic cannot hold'):
    d3d_config.ExperimentConfig(data=data_config(train_pattern, tf_data_service=address, deterministic=True)).validate()


def test_batches_through_the_service_hold_the_local_pipelines_clips(train_pattern, cluster):
  config = data_config(train_pattern)
  local = clips(video_input.build_train_dataset(config, ('rgb',)), 2 * NUM_VIDEOS)
  remote = clips(video_input.build_train_dataset(dataclasses.replace(config, tf_data_service=cluster[0]), ('rgb',)),
                 2 * NUM_VIDEOS)
  assert len(set(local)) == NUM_VIDEOS  # one clip per video: the setting is deterministic
  assert set(remote) == set(local)
  counts = collections.Counter(remote)
  assert max(counts.values()) - min(counts.values()) <= 4, counts  # every video about as often (4 epochs read)


def test_one_epoch_is_shared_out_between_the_workers_without_repeats(train_pattern, cluster):
  """DYNAMIC sharding of a one-epoch pipeline: every video exactly once over the two workers (off, each worker
  would read them all)."""
  config = data_config(train_pattern)
  files = video_input.glob_files(train_pattern)
  seed = tf.constant([0, 1], tf.int64)

  def epoch():
    return (tf.data.Dataset.from_tensor_slices(files).shuffle(len(files))
            .interleave(video_input._records_with_path, num_parallel_calls=2)  # pylint: disable=protected-access
            .map(lambda record, path: video_input.decode_train_example(record, path, seed, config, ('rgb',),
                                                                       d3d_config.DEFAULT_PIXEL_RANGE))
            .map(lambda features, label: ({'rgb': features['rgb'][tf.newaxis]}, label[tf.newaxis])))

  local = clips(epoch(), NUM_VIDEOS + 1)
  remote = clips(data_service.distribute(epoch(), cluster[0]), NUM_VIDEOS + 1)
  assert len(local) == NUM_VIDEOS
  assert sorted(remote) == sorted(local)


def test_lost_workers_are_reported_and_a_new_one_resumes_the_run(train_pattern, monkeypatch, caplog):
  """TensorFlow goes on with the workers left, and without any waits silently; the pipeline says so."""
  dispatcher = data_service.start_dispatcher()
  address = dispatcher.target.split('://', 1)[1]
  workers = [data_service.start_worker(address, host='localhost') for _ in range(2)]
  monkeypatch.setattr(data_service, 'STALL_TIMEOUT_S', 2.0)
  caplog.set_level(logging.ERROR)
  batches = iter(video_input.build_train_dataset(data_config(train_pattern, tf_data_service=address), ('rgb',)))
  next(batches)
  workers[0].stop()
  for _ in range(8):
    next(batches)
  assert not caplog.records
  workers[1].stop()
  received = []

  def read_on():  # until the batches already on their way run out, then waiting for a worker
    for _ in range(50):
      received.append(next(batches))

  thread = threading.Thread(target=read_on, daemon=True)
  thread.start()
  deadline = time.monotonic() + 30
  while not caplog.records and time.monotonic() < deadline:
    time.sleep(0.2)
  message = caplog.records[0].getMessage()
  assert f'no batch from the tf.data service at {address} for' in message
  assert f'--dispatcher_address={address}' in message
  num_received = len(received)
  workers.append(data_service.start_worker(address, host='localhost'))
  thread.join(timeout=30)
  assert len(received) == 50 > num_received
  watches = [t for t in threading.enumerate() if t.name == 'tf_data_service_watch']
  workers[2].stop()
  dispatcher.stop()
  # The pipeline's last prefetched request is never answered: once the pipeline is gone, nothing is reported.
  del batches, read_on
  gc.collect()
  caplog.clear()
  deadline = time.monotonic() + 30
  while any(t.is_alive() for t in watches) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert watches and not any(t.is_alive() for t in watches)
  assert not caplog.records


def test_a_bad_record_read_by_a_worker_is_named(train_pattern, cluster):
  config = dataclasses.replace(data_config(train_pattern, tf_data_service=cluster[0]), num_classes=2)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    clips(video_input.build_train_dataset(config, ('rgb',)), 2 * NUM_VIDEOS)
  assert 'label 2 is outside the 2 classes of data.num_classes=2' in str(video_input.record_error(raised.value))
