"""End-to-end conversions of real and synthetic videos, read back with plain TensorFlow parsing."""

import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

import synthetic_videos
from d3d_core import flow_quantization
from d3d_core import folder_lock
from d3d_core import label_map
from d3d_core import schema
from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import cli
from tfrecord_tools import convert
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests
from tfrecord_tools import sequence_example

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_CONTEXT_FEATURES = {
    schema.MEDIA_ID: tf.io.FixedLenFeature([], tf.string),
    schema.DATA_PATH: tf.io.FixedLenFeature([], tf.string),
    schema.LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
    schema.LABEL_STRING: tf.io.FixedLenFeature([], tf.string),
    schema.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    schema.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    schema.IMAGE_FRAME_RATE: tf.io.FixedLenFeature([], tf.float32),
    schema.CLIP_START_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    schema.CLIP_END_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    schema.FLOW_BOUND: tf.io.FixedLenFeature([], tf.float32),
}
_SEQUENCE_FEATURES = {
    schema.IMAGE_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string),
    schema.IMAGE_TIMESTAMP: tf.io.FixedLenSequenceFeature([], tf.int64),
    schema.FLOW_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string),
}


def parse(record):
  """SequenceExample bytes -> dict of NumPy values, decoded with TensorFlow's own ops only."""
  context, sequence = tf.io.parse_single_sequence_example(record, _CONTEXT_FEATURES, _SEQUENCE_FEATURES)
  example = {k: v.numpy() for k, v in {**context, **sequence}.items()}
  example['rgb'] = np.stack([tf.io.decode_image(f).numpy() for f in sequence[schema.IMAGE_ENCODED]])
  example['flow'] = np.stack([tf.io.decode_image(f).numpy() for f in sequence[schema.FLOW_ENCODED]])
  return example


def read_shards(output_dir, name, num_shards):
  """Records of each shard, in order."""
  paths = convert_lib.shard_paths(str(output_dir), name, num_shards)
  return [[r.numpy() for r in tf.data.TFRecordDataset(p)] for p in paths]


def write_csv(path, rows):
  path.write_text('path,label,start,end\n' + ''.join(f'{p},{label},{s},{e}\n' for p, label, s, e in rows))
  return path


def make_config(csv_path, output_dir, **overrides):
  settings = dict(source=manifests.SourceConfig(source='csv', input=str(csv_path)), output_dir=str(output_dir),
                  name='clips', num_shards=2, num_workers=1,
                  decode=video_reader.DecodeConfig(fps=25, short_side=48, max_frames=5),
                  flow=flow_backends.FlowConfig(backend='opencv'))
  settings.update(overrides)
  return convert_lib.ConversionConfig(**settings)


def run_cli(args, prefix=(), **popen_kwargs):
  """Starts `python -m tfrecord_tools.convert` with `args`, after the `prefix` command (e.g. one that drops rights)."""
  command = list(prefix) + [sys.executable, '-m', 'tfrecord_tools.convert'] + args
  return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen_kwargs)


def error_lines(stderr):
  """The `error:` lines of a command's stderr; a traceback there fails the test, since users must not see one."""
  assert 'Traceback' not in stderr, stderr
  return [line for line in stderr.splitlines() if line.startswith('error:')]


@pytest.fixture(scope='module')
def six_clips(tmp_path_factory, bikes_video, bunny_video):
  """Six one-second clips of the two real videos (two classes), converted once into six shards."""
  folder = tmp_path_factory.mktemp('six_clips')
  csv_path = write_csv(folder / 'clips.csv', [(video, label, start, start + 1)
                                              for video, label in ((bikes_video, 'bike'), (bunny_video, 'bunny'))
                                              for start in range(3)])
  config = make_config(csv_path, folder / 'clean', num_shards=6)
  convert_lib.run_local(config)
  return config, read_shards(folder / 'clean', 'clips', 6)


def test_real_videos_read_back_with_plain_tensorflow(tmp_path, bikes_video, bunny_video):
  csv_path = write_csv(tmp_path / 'list.csv', [(bikes_video.name, 'bike', '', ''), (bunny_video.name, 'bunny', '', '')])
  source = manifests.SourceConfig(source='csv', input=str(csv_path), video_root=str(bikes_video.parent))
  config = make_config(csv_path, tmp_path / 'out', source=source,
                       decode=video_reader.DecodeConfig(short_side=64, max_frames=8))

  report = convert_lib.run_local(config)

  assert (report['videos_written'], report['videos_failed'], report['frames_written']) == (2, 0, 16)
  assert convert.exit_status(report) == cli.EXIT_OK
  assert label_map.read_label_map(str(tmp_path / 'out' / 'label_map.txt')) == ['bike', 'bunny']
  shards = read_shards(tmp_path / 'out', 'clips', 2)
  assert [len(s) for s in shards] == [1, 1]
  examples = {e[schema.MEDIA_ID].decode(): e for e in map(parse, [r for s in shards for r in s])}
  expected = {'bikes': (0, b'bike', 151, bikes_video), 'bigbuckbunny': (1, b'bunny', 114, bunny_video)}
  for media_id, (label_index, label, width, video_path) in expected.items():
    example = examples[media_id]
    assert (example[schema.LABEL_INDEX], example[schema.LABEL_STRING]) == (label_index, label)
    assert (example[schema.IMAGE_HEIGHT], example[schema.IMAGE_WIDTH]) == (64, width)
    assert example[schema.IMAGE_FRAME_RATE] == 25.0
    assert example[schema.DATA_PATH].decode() == str(video_path)
    np.testing.assert_array_equal(example[schema.IMAGE_TIMESTAMP], np.arange(8) * 40_000)
    # The end is exclusive, as MediaPipe's: after the last frame's 40 ms.
    assert (example[schema.CLIP_START_TIMESTAMP], example[schema.CLIP_END_TIMESTAMP]) == (0, 320_000)
    assert example['rgb'].shape == (8, 64, width, 3) and example['flow'].shape == (8, 64, width, 3)
    decoded = video_reader.read_video(str(video_path), config.decode).frames
    mse = np.mean((example['rgb'].astype(float) - decoded) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30  # PSNR of JPEG quality 95 on small, detailed frames
    np.testing.assert_array_equal(example['flow'][-1], example['flow'][-2])  # the last frame repeats


def test_known_translation_gives_that_flow(tmp_path):
  dx, dy = 2, -1
  frames = synthetic_videos.translating_texture(6, 64, 96, dx, dy)
  video = synthetic_videos.write_video(tmp_path / 'moving.avi', frames)
  csv_path = write_csv(tmp_path / 'list.csv', [(video, 'moving', '', '')])
  encoding = sequence_example.EncodingConfig(flow_format='png')
  config = make_config(csv_path, tmp_path / 'out', num_shards=1, encoding=encoding,
                       decode=video_reader.DecodeConfig(short_side=64))

  convert_lib.run_local(config)

  [[record]] = read_shards(tmp_path / 'out', 'clips', 1)
  example = parse(record)
  np.testing.assert_array_equal(example['rgb'].shape, frames.shape)
  stored_flow = flow_quantization.dequantize_flow(example['flow'], encoding.flow_bound)
  interior = stored_flow[:, 8:-8, 8:-8]
  tolerance = flow_quantization.max_quantization_error(encoding.flow_bound) + 0.1
  np.testing.assert_allclose(interior[..., 0].mean(axis=(1, 2)), dx, atol=tolerance)
  np.testing.assert_allclose(interior[..., 1].mean(axis=(1, 2)), dy, atol=tolerance)

  # The stored flow is the backend's flow, within the quantisation bound.
  backend = flow_backends.create_backend(config.flow)
  flow = backend.video_flow(video_reader.read_video(str(video), config.decode).frames)
  error = np.abs(stored_flow - np.clip(flow, -encoding.flow_bound, encoding.flow_bound))
  assert error.max() <= flow_quantization.max_quantization_error(encoding.flow_bound) + 1e-4


@pytest.mark.slow
def test_bad_inputs_are_reported_and_the_rest_written(tmp_path, bikes_video):
  bad = synthetic_videos.write_bad_inputs(tmp_path / 'bad', bikes_video)
  csv_path = write_csv(tmp_path / 'list.csv', [(bikes_video, 'bike', 0, 1)] + [(p, 'bike', '', '')
                                                                               for p, _ in bad.values()])
  output_dir = tmp_path / 'out'

  process = run_cli([f'--input={csv_path}', f'--output_dir={output_dir}', '--name=mixed', '--num_shards=3',
                     '--num_workers=2', '--short_side=48', '--max_frames=5'])
  stdout, stderr = process.communicate(timeout=300)

  assert process.returncode == cli.EXIT_SKIPPED, stderr
  # Neither the command nor its worker processes print TensorFlow's C++ start-up notices.
  assert 'InitializeLog' not in stderr and 'oneDNN' not in stderr, stderr
  report = json.loads(pathlib.Path(convert_lib.report_path(str(output_dir), 'mixed')).read_text())
  assert (report['videos_written'], report['videos_failed']) == (1, len(bad))
  reasons = {f['path']: f['reason'] for f in report['failures']}
  for path, reason in bad.values():
    assert reason in reasons[str(path)]
  assert '"videos_failed": 6' in stdout
  records = [r for shard in read_shards(output_dir, 'mixed', 3) for r in shard]
  assert [parse(r)[schema.MEDIA_ID].decode() for r in records] == [str(bikes_video)[:-4] + '_0.000_1.000']


@pytest.mark.slow
def test_workers_of_a_package_main_command_start_quietly_too(tmp_path, bikes_video):
  """A command run as `python -m package` (as the demo is): 'spawn' does not re-run a package's __main__ in the
  workers, so they follow their parent's quiet start by themselves. stderr goes to a file, as under `make demo > log`."""
  package = tmp_path / 'quiet_command'
  package.mkdir()
  (package / '__init__.py').write_text('')
  rows = [(bikes_video, 'bike', 0, 1), (bikes_video, 'bike', 1, 2)]
  config = make_config(write_csv(tmp_path / 'list.csv', rows), tmp_path / 'out', num_workers=2)
  (package / '__main__.py').write_text(
      'from d3d_core import quiet_start\n'
      'quiet_start.start_tensorflow()\n'
      'import pickle, sys\n'
      'from tfrecord_tools import convert_lib\n'
      'report = convert_lib.run_local(pickle.loads(bytes.fromhex(sys.argv[1])))\n'
      'print(report["videos_written"])\n')
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    process = subprocess.run([sys.executable, '-m', 'quiet_command', pickle.dumps(config).hex()], stderr=stderr,
                             stdout=subprocess.PIPE, text=True, timeout=300, check=False,
                             env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), str(REPO_ROOT)])})
  assert process.returncode == 0, stderr_path.read_text()
  assert process.stdout.splitlines() == ['clips: optical flow by opencv (--flow_backend=opencv)', '2']
  assert stderr_path.read_text() == ''


def _state_files(folder):
  return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


def cli_args(config):
  """The command-line flags of a `make_config` conversion."""
  return [f'--input={config.source.input}', f'--output_dir={config.output_dir}', f'--name={config.name}',
          f'--num_shards={config.num_shards}', f'--num_workers={config.num_workers}',
          f'--short_side={config.decode.short_side}', f'--max_frames={config.decode.max_frames}',
          f'--flow_backend={config.flow.backend}']


def wait_for(condition, process, timeout=240):
  """Polls `condition` until it holds; fails when `process` ends first, since the test meant to act on it alive."""
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, 'the conversion ended before the test could act on it'
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.01)


@pytest.mark.slow
def test_a_second_conversion_is_refused_and_a_killed_one_resumes_to_the_clean_result(tmp_path, six_clips):
  clean_config, clean = six_clips
  assert [len(s) for s in clean] == [1] * 6
  config = dataclasses.replace(clean_config, output_dir=str(tmp_path / 'killed'))
  output_dir = pathlib.Path(config.output_dir)
  first = run_cli(cli_args(config), start_new_session=True)
  lock = output_dir / folder_lock.LOCK_FILENAME
  wait_for(lambda: lock.exists() and f'pid {first.pid} ' in lock.read_text(), first)
  os.killpg(first.pid, signal.SIGSTOP)  # alive and holding the folder, until the second run has been answered

  second = run_cli(cli_args(config))
  _, stderr = second.communicate(timeout=120)

  assert second.returncode == cli.EXIT_ERROR
  assert error_lines(stderr) == [f'error: output folder {output_dir} is in use by a running conversion (pid {first.pid} '
                                 f'on {socket.gethostname()}): wait for it to end, or use another folder']
  os.killpg(first.pid, signal.SIGCONT)
  first_shard = pathlib.Path(convert_lib.shard_paths(config.output_dir, 'clips', 6)[0])
  wait_for(first_shard.exists, first)
  os.killpg(first.pid, signal.SIGKILL)
  first.communicate()
  finished = sorted(output_dir.glob('clips-*.tfrecord'))
  assert first_shard in finished and len(finished) < 6, 'the kill should land in the middle of the job'

  report = convert_lib.run_local(config)

  assert read_shards(config.output_dir, 'clips', 6) == clean  # every video once, byte for byte
  assert report['videos_written'] == 6 and report['frames_written'] == 30
  assert report['frames_this_run'] < 30  # the shards finished before the kill were kept
  assert [name for name in _state_files(output_dir) if not name.endswith('.done.json')] == [folder_lock.LOCK_FILENAME]


@pytest.mark.slow
def test_rerun_keeps_complete_shards_and_redoes_damaged_ones(tmp_path, six_clips):
  clean_config, clean = six_clips
  output_dir = tmp_path / 'out'
  shutil.copytree(clean_config.output_dir, output_dir)
  config = dataclasses.replace(clean_config, output_dir=str(output_dir))
  paths = [pathlib.Path(p) for p in convert_lib.shard_paths(str(output_dir), 'clips', 6)]
  kept_mtime = paths[0].stat().st_mtime_ns

  paths[1].unlink()  # killed before the rename, with a stale temporary file left behind
  stale = output_dir / f'.{paths[1].name}.4242-0badf00d.incomplete'
  stale.write_bytes(b'half a record')
  pathlib.Path(convert_lib.summary_path(str(paths[2]))).unlink()  # marker gone: the shard is not known complete
  changed = bytearray(paths[3].read_bytes())
  changed[:8] = bytes(8)  # zeros over the start of a shard that was marked complete
  paths[3].write_bytes(changed)
  finished_size = paths[4].stat().st_size
  paths[4].write_bytes(paths[4].read_bytes()[:-100])  # cut short after it was marked complete
  process = run_cli(cli_args(config))
  _, stderr = process.communicate(timeout=300)

  assert process.returncode == cli.EXIT_OK and not error_lines(stderr)
  assert f'{paths[3]}: its contents changed after it was finished (SHA-256 differs); rewriting it' in stderr
  assert (f'{paths[4]}: it has {finished_size - 100} bytes, but had {finished_size} when it was finished; '
          'rewriting it') in stderr
  assert read_shards(output_dir, 'clips', 6) == clean
  assert paths[0].stat().st_mtime_ns == kept_mtime
  report = json.loads(pathlib.Path(convert_lib.report_path(str(output_dir), 'clips')).read_text())
  assert report['frames_this_run'] == 20 and report['videos_written'] == 6
  assert not stale.exists()


def test_changed_settings_or_classes_are_refused(tmp_path, six_clips, bikes_video):
  clips_csv = six_clips[0].source.input
  output_dir = tmp_path / 'out'
  convert_lib.prepare_job(make_config(clips_csv, output_dir))
  with pytest.raises(convert_lib.ConversionSetupError, match='differing: decode'):
    convert_lib.prepare_job(make_config(clips_csv, output_dir, decode=video_reader.DecodeConfig(fps=10)))
  with pytest.raises(convert_lib.ConversionSetupError, match='differing: num_shards'):
    convert_lib.prepare_job(make_config(clips_csv, output_dir, num_shards=3))

  other_classes = write_csv(tmp_path / 'test.csv', [(bikes_video, 'bike', 2, 3)])
  with pytest.raises(convert_lib.ConversionSetupError, match='--label_map='):
    convert_lib.prepare_job(make_config(other_classes, output_dir, name='test'))
  job = convert_lib.prepare_job(make_config(other_classes, output_dir, name='test',
                                            label_map=str(output_dir / 'label_map.txt')))
  assert job.tasks[0][1] == 0 and job.class_names == ['bike', 'bunny']


@pytest.mark.slow
def test_usage_errors_exit_with_2(tmp_path):
  process = run_cli([f'--output_dir={tmp_path}', '--fps=25'])
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == cli.EXIT_ERROR
  assert error_lines(stderr) == ['error: flag --input=None: Flag --input must have a value other than None. '
                                 '(--helpfull lists the flags)']


def test_shards_are_contiguous_blocks_of_sorted_videos():
  tasks = [(manifests.VideoEntry(path=f'{i}.mp4', label='a', media_id=f'{i:02d}'), 0) for i in range(10)]
  shards = convert_lib.assign_shards(tasks, 4)
  assert [[t[0].media_id for t in s] for s in shards] == [['00', '01'], ['02', '03', '04'], ['05', '06'],
                                                          ['07', '08', '09']]
  assert [len(s) for s in convert_lib.assign_shards(tasks[:2], 3)] == [0, 1, 1]


def test_tvl1_parameters_reach_opencv():
  params = tvl1_params.Tvl1Params(tau=0.2, lambda_=0.1, nscales=3, warps=2)
  config = flow_backends.FlowConfig(backend='opencv', tvl1=params, use_initial_flow=True)
  backend = flow_backends.create_backend(config)
  tvl1 = backend._tvl1
  assert (tvl1.getTau(), tvl1.getLambda(), tvl1.getScalesNumber(), tvl1.getWarpingsNumber(),
          tvl1.getUseInitialFlow()) == pytest.approx((0.2, 0.1, 3, 2, True))
  frames = synthetic_videos.translating_texture(3, 48, 64, 1, 0)
  flow = backend.video_flow(frames)
  assert flow.shape == (3, 48, 64, 2) and flow.dtype == np.float32
  assert abs(np.median(flow[1, ..., 0]) - 1) < 0.2
  assert flow_backends.create_backend(flow_backends.FlowConfig(backend='none')) is None
  default = cv2.optflow.DualTVL1OpticalFlow_create()
  defaults = tvl1_params.Tvl1Params()
  assert (default.getTau(), default.getMedianFiltering()) == pytest.approx((defaults.tau, defaults.median_filtering))


def test_kinetics_whole_videos_are_cut_and_missing_clips_reported(tmp_path, bikes_video):
  clips = tmp_path / 'clips'
  clips.mkdir()
  (clips / 'bikesYT0001.mp4').symlink_to(bikes_video)
  (tmp_path / 'train.csv').write_text('label,youtube_id,time_start,time_end,split\n'
                                      'riding a bike,bikesYT0001,2,3,train\n'
                                      'riding a bike,goneYT00001,10,20,train\n')
  config = make_config(tmp_path / 'train.csv', tmp_path / 'out', num_shards=1, source=manifests.SourceConfig(
      source='kinetics', input=str(tmp_path / 'train.csv'), video_root=str(clips)))

  report = convert_lib.run_local(config)

  assert convert.exit_status(report) == cli.EXIT_SKIPPED
  assert [(f['media_id'], f['reason'].split(':')[0]) for f in report['failures']] == [('goneYT00001_000010_000020',
                                                                                      'missing')]
  [[record]] = read_shards(tmp_path / 'out', 'clips', 1)
  example = parse(record)
  assert example[schema.MEDIA_ID] == b'bikesYT0001_000002_000003'
  np.testing.assert_array_equal(example[schema.IMAGE_TIMESTAMP], 2_000_000 + np.arange(5) * 40_000)


@pytest.mark.slow
def test_tf_flow_backend_writes_the_same_records_as_opencv(tmp_path):
  """`--flow_backend=tf` (TensorFlow TV-L1) writes records of the same layout whose flow agrees with OpenCV's."""
  frames = synthetic_videos.translating_texture(4, 48, 64, 2, 1)
  video = synthetic_videos.write_video(tmp_path / 'moving.avi', frames)
  csv_path = write_csv(tmp_path / 'list.csv', [(video, 'moving', '', '')])
  encoding = sequence_example.EncodingConfig(flow_format='png')
  examples = {}
  for backend in ('opencv', 'tf'):
    config = make_config(csv_path, tmp_path / backend, num_shards=1, encoding=encoding,
                         decode=video_reader.DecodeConfig(short_side=48),
                         flow=flow_backends.FlowConfig(backend=backend, batch_size=2))
    report = convert_lib.run_local(config)
    assert report['videos_written'] == 1
    [[record]] = read_shards(tmp_path / backend, 'clips', 1)
    examples[backend] = parse(record)

  assert examples['tf'].keys() == examples['opencv'].keys()
  np.testing.assert_array_equal(examples['tf']['rgb'], examples['opencv']['rgb'])
  flows = {b: flow_quantization.dequantize_flow(e['flow'], encoding.flow_bound) for b, e in examples.items()}
  end_point_difference = np.linalg.norm(flows['tf'] - flows['opencv'], axis=-1)
  assert end_point_difference.mean() < 0.1
  np.testing.assert_allclose(flows['tf'][:, 8:-8, 8:-8].mean(axis=(1, 2)), [[2, 1]] * 4, atol=0.15)


def test_tf_flow_backend_refuses_initial_flow():
  with pytest.raises(ValueError, match='use_initial_flow needs the opencv backend'):
    flow_backends.FlowConfig(backend='tf', use_initial_flow=True)
