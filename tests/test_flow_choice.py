"""`--flow_backend=auto`: the choice between TensorFlow's and OpenCV's TV-L1, measured on a real video, recorded with
the data set, and kept when a conversion resumes."""

import dataclasses
import json
import os
import pathlib

import pytest

import test_convert
from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import flow_choice
from tfrecord_tools import manifests

DECODE = video_reader.DecodeConfig(short_side=48, max_frames=6)
# Few iterations: the choice's plumbing is under test here, not the speed of OpenCV's default schedule.
FAST_TVL1 = tvl1_params.Tvl1Params(nscales=2, warps=1, outer_iterations=1, inner_iterations=5)


def _entries(*paths):
  return [manifests.VideoEntry(media_id=str(i), path=str(path), label='x') for i, path in enumerate(paths)]


def _timings(tf_seconds, opencv_seconds):
  return lambda flow, frames, threads, pool=None: {'tf': tf_seconds, 'opencv': opencv_seconds, 'tf_first_call': 9.0}


# The measured video has 5 pairs (DECODE.max_frames=6); TensorFlow's first call takes 9 s (`_timings`).
@pytest.mark.parametrize('videos, workers, tf_seconds, opencv_seconds, expected, why', [
    (1, 1, 10.0, 30.0, 'tf', '2.5x faster here: for about 5 pairs a worker TensorFlow 59 s, OpenCV 150 s'),
    (1, 1, 30.0, 10.0, 'opencv', '3.2x faster here: for about 5 pairs a worker TensorFlow 159 s, OpenCV 50 s'),
    # A small conversion: the saving is within what the measurement's noise moves; OpenCV, the reference, is kept.
    (320, 2, 0.05, 0.1, 'opencv', 'TensorFlow would save 31 s a worker (1.63x), under the 60 s and 1.1x that it '
                                  'takes to replace the reference implementation: for about 800 pairs a worker '
                                  'TensorFlow 49 s, OpenCV 80 s'),
    # A large one, where the two are equal to the measurement's noise.
    (10000, 1, 0.1, 0.105, 'opencv', 'TensorFlow would save 241 s a worker (1.05x), under the 60 s and 1.1x'),
    # The videos shared over the workers: each worker's share is what it waits for.
    (10000, 4, 0.1, 0.2, 'tf', '2.0x faster here: for about 12500 pairs a worker TensorFlow 1259 s, OpenCV 2500 s')])
def test_auto_takes_the_backend_that_finishes_the_conversion_sooner(monkeypatch, bikes_video, videos, workers,
                                                                    tf_seconds, opencv_seconds, expected, why):
  monkeypatch.setattr(flow_choice, 'measure', _timings(tf_seconds, opencv_seconds))
  choice = flow_choice.resolve(flow_backends.FlowConfig(), _entries(*[bikes_video] * videos), DECODE, threads=2,
                               num_workers=workers)
  assert choice.flow.backend == expected
  assert choice.reason.startswith(why)
  assert '; measured on 48x113 frames with 2 threads a worker: TensorFlow ' in choice.reason


def test_auto_skips_unreadable_videos_and_explicit_backends_are_kept(monkeypatch, tmp_path, bikes_video):
  monkeypatch.setattr(flow_choice, 'measure', _timings(10.0, 30.0))
  (tmp_path / 'broken.mp4').write_bytes(b'not a video')
  choice = flow_choice.resolve(flow_backends.FlowConfig(), _entries(tmp_path / 'broken.mp4', bikes_video), DECODE, 1)
  assert choice.flow.backend == 'tf'
  choice = flow_choice.resolve(flow_backends.FlowConfig(), _entries(tmp_path / 'broken.mp4'), DECODE, 1)
  assert (choice.flow.backend, choice.reason) == ('opencv', 'none of the first 5 videos could be read to measure '
                                                  'the backends')
  opencv = flow_backends.FlowConfig(backend='opencv')
  assert flow_choice.resolve(opencv, _entries(bikes_video), DECODE, 1).flow == opencv
  initial_flow = flow_backends.FlowConfig(use_initial_flow=True)
  assert flow_choice.resolve(initial_flow, _entries(bikes_video), DECODE, 1).flow.backend == 'opencv'


def test_auto_measures_both_backends_in_a_worker_process(bikes_video):
  choice = flow_choice.resolve(flow_backends.FlowConfig(tvl1=FAST_TVL1), _entries(bikes_video), DECODE, threads=1)
  assert choice.flow.backend in ('tf', 'opencv')
  assert 'measured on 48x113 frames with 1 thread a worker: TensorFlow ' in choice.reason
  with pytest.raises(ValueError, match='resolve it first'):
    flow_backends.create_backend(flow_backends.FlowConfig())


def _backends_made_after(flow, backends):
  """In a worker: how many backends it holds after asking for those named."""
  for backend in backends:
    flow_backends.shared_backend(dataclasses.replace(flow, backend=backend))
  return flow_backends.shared_backend.cache_info().currsize


def test_the_conversion_workers_measure_and_keep_the_backends_they_made(tmp_path, bikes_video):
  frames = video_reader.read_video(str(bikes_video), DECODE).frames[:3]
  flow = flow_backends.FlowConfig(tvl1=FAST_TVL1, compile_cache=str(tmp_path / 'xla'))
  config = test_convert.make_config(tmp_path / 'unused.csv', tmp_path / 'out', flow=flow)
  with convert_lib.Workers(config, num_workers=1, threads=1) as workers:
    pool = workers.pool()
    seconds = flow_choice.measure(flow, frames, 1, pool)
    assert seconds.keys() == {'tf', 'tf_first_call', 'opencv'} and all(value > 0 for value in seconds.values())
    # The one worker made both backends, and the conversion's calls get them back rather than new ones.
    assert pool.apply(_backends_made_after, (flow, ())) == 2
    assert pool.apply(_backends_made_after, (flow, ('tf', 'opencv'))) == 2


@pytest.mark.slow
def test_a_resumed_auto_conversion_keeps_its_backend_and_writes_the_same_records(monkeypatch, tmp_path, bikes_video,
                                                                                  bunny_video):
  csv_path = test_convert.write_csv(tmp_path / 'list.csv', [(bikes_video, 'bike', 0, 1), (bunny_video, 'bunny', 0, 1)])
  config = test_convert.make_config(csv_path, tmp_path / 'out', flow=flow_backends.FlowConfig(tvl1=FAST_TVL1))
  first = convert_lib.run_local(config)
  backend = first['flow']['backend']
  assert backend in ('tf', 'opencv') and '; measured on 48x' in first['flow']['reason']
  settings = json.loads((tmp_path / 'out' / 'clips.settings.json').read_text())
  assert settings['flow']['backend'] == backend
  assert settings['flow']['tvl1'] == first['flow']['tvl1'] == {'tau': 0.25, 'lambda_': 0.15, 'theta': 0.3,
                                                               'nscales': 2, 'warps': 1, 'epsilon': 0.01,
                                                               'inner_iterations': 5, 'outer_iterations': 1,
                                                               'scale_step': 0.8, 'gamma': 0.0,
                                                               'median_filtering': 5}
  clean = test_convert.read_shards(tmp_path / 'out', 'clips', 2)
  assert convert_lib.run_local(config)['frames_this_run'] == 0  # finished: nothing to do, whichever the backend

  # An interrupted run: the second shard lost. The rerun measures nothing and redoes it with the same backend.
  [_, second_shard] = convert_lib.shard_paths(str(tmp_path / 'out'), 'clips', 2)
  pathlib.Path(second_shard).unlink()
  monkeypatch.setattr(flow_choice, 'measure', None)  # calling it would fail
  resumed = convert_lib.run_local(config)
  assert resumed['flow'] == {**first['flow'], 'reason': 'the backend this data set was started with'}
  assert resumed['frames_this_run'] == 5
  assert test_convert.read_shards(tmp_path / 'out', 'clips', 2) == clean
  # Another split into the same folder, same settings: the same implementation, unmeasured; other settings: measured.
  other_split = convert_lib.run_local(dataclasses.replace(config, name='test', num_shards=1))
  assert other_split['flow'] == {**first['flow'], 'reason': 'as clips.settings.json in this folder: one data set, '
                                                            'one implementation'}
  monkeypatch.setattr(flow_choice, 'measure', _timings(10.0, 30.0))
  other_tvl1 = dataclasses.replace(config, name='other', num_shards=1,
                                   flow=flow_backends.FlowConfig(tvl1=dataclasses.replace(FAST_TVL1, warps=2)))
  assert 'measured on' in convert_lib.run_local(other_tvl1)['flow']['reason']


@pytest.mark.slow
def test_compiled_flow_programs_are_kept_between_runs_and_load_quietly(tmp_path, bikes_video):
  csv_path = test_convert.write_csv(tmp_path / 'list.csv', [(bikes_video, 'bike', 0, 1)])
  cache = tmp_path / 'xla'
  args = [f'--input={csv_path}', '--short_side=48', '--max_frames=4', '--num_shards=1', '--flow_backend=tf',
          f'--flow_compile_cache={cache}', '--tvl1_nscales=2', '--tvl1_warps=1']
  first = test_convert.run_cli(args + [f'--output_dir={tmp_path / "first"}'])
  first.communicate(timeout=300)
  assert first.returncode == 0
  programs = sorted(cache.iterdir())
  assert programs, 'no compiled program was kept'
  second = test_convert.run_cli(args + [f'--output_dir={tmp_path / "second"}'])
  _, stderr = second.communicate(timeout=300)
  assert second.returncode == 0
  assert sorted(cache.iterdir()) == programs  # loaded, not compiled again
  assert 'E0000' not in stderr and 'cpu_aot_loader' not in stderr, stderr
  assert (tmp_path / 'first' / 'data-00000-of-00001.tfrecord').read_bytes() == \
      (tmp_path / 'second' / 'data-00000-of-00001.tfrecord').read_bytes()
  rerun = test_convert.run_cli(args + [f'--output_dir={tmp_path / "second"}'])  # finished: nothing left to do
  _, stderr = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, stderr[-2000:]


def test_the_compile_cache_is_set_only_for_what_starts_inside(monkeypatch, tmp_path):
  monkeypatch.delenv('TF_XLA_FLAGS', raising=False)
  with flow_backends.compile_cache(str(tmp_path / 'a')):
    assert os.environ['TF_XLA_FLAGS'] == f'--tf_xla_persistent_cache_directory={tmp_path / "a"}'
    with flow_backends.compile_cache(str(tmp_path / 'b')):  # a cache named already is kept
      assert os.environ['TF_XLA_FLAGS'] == f'--tf_xla_persistent_cache_directory={tmp_path / "a"}'
  assert 'TF_XLA_FLAGS' not in os.environ
  monkeypatch.setenv('TF_XLA_FLAGS', '--tf_xla_auto_jit=0')
  with flow_backends.compile_cache(''):
    assert os.environ['TF_XLA_FLAGS'] == '--tf_xla_auto_jit=0'
  assert os.environ['TF_XLA_FLAGS'] == '--tf_xla_auto_jit=0'
