"""`official_d3d.demo --quick` end to end: real generated videos, TV-L1 records, three trained networks, a SavedModel.

One quick demo runs for the module (a couple of minutes on 2 cores); the tests check what it leaves behind, and that
a second run resumes by skipping every completed step.
"""

import contextlib
import dataclasses
import glob
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from d3d_core import label_map
from d3d_core import video_reader
from official_d3d import demo
from tfrecord_tools import flow_backends
from tfrecord_tools import make_motion_dataset

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_printing(config):
  """(results, what the demo printed)."""
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    results = demo.run_demo(config)
  return results, printed.getvalue()


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  """(config, results, printed output) of one quick demo."""
  config = dataclasses.replace(demo.QUICK_CONFIG, output_dir=str(tmp_path_factory.mktemp('demo')))
  results, printed = run_printing(config)
  return config, results, printed


def test_prints_the_table_with_the_four_accuracies_and_the_latencies(quick_run):
  _, results, printed = quick_run
  for name in demo.ACCURACY_NAMES:
    row = next(line for line in printed.splitlines() if line.startswith(name + ' '))
    assert float(row.split()[1]) == pytest.approx(results['top_1'][name], abs=5e-4)
  assert 'D3D SavedModel' in printed and 'two-stream (incl. TV-L1)' in printed
  assert f'two-stream / D3D: {results["latency"]["two_stream_over_d3d"]:.1f}x' in printed
  # The paths and the next commands, so a user can go on.
  assert results['paths']['d3d_saved_model'] in printed
  assert 'python -m official_d3d.serving.client' in printed


def test_results_json_holds_accuracies_latencies_and_existing_paths(quick_run):
  config, results, _ = quick_run
  with open(os.path.join(config.output_dir, demo.RESULTS_FILENAME)) as f:
    saved = json.load(f)
  assert saved['top_1'] == results['top_1']
  assert set(saved['top_1']) == set(demo.ACCURACY_NAMES)
  # The machine a seed's figures depend on (CPU, cores, instruction sets) is recorded with them.
  assert saved['machine']['cores'] == os.cpu_count() and saved['machine']['tensorflow'] == tf.__version__
  num_test = len(config.dataset.classes) * config.dataset.videos_per_class_test
  assert saved['num_test_videos'] == num_test
  for name, accuracy in saved['top_1'].items():
    # A video-level accuracy over num_test videos is a multiple of 1 / num_test.
    assert 0.0 <= accuracy <= 1.0 and round(accuracy * num_test, 6) == round(accuracy * num_test), name
  latency = saved['latency']
  assert latency['d3d_ms_per_clip'] > 0 and latency['tvl1_flow_ms_per_clip'] > 0
  # Two-stream runs a network of the student's size, plus TV-L1 and the flow network.
  assert latency['two_stream_ms_per_clip'] > latency['tvl1_flow_ms_per_clip']
  assert latency['two_stream_over_d3d'] == pytest.approx(
      latency['two_stream_ms_per_clip'] / latency['d3d_ms_per_clip'], rel=0.01)
  for name in ('train_records', 'test_records'):
    assert glob.glob(saved['paths'][name]), name
  for name in ('label_map', 'flow_teacher_model_dir', 'rgb_baseline_model_dir', 'd3d_student_model_dir',
               'd3d_saved_model', 'training_curves', 'accuracy_plot'):
    assert os.path.exists(saved['paths'][name]), name


def test_records_hold_every_video_with_flow(quick_run):
  config, results, _ = quick_run
  for split in make_motion_dataset.SPLITS:
    records = list(tf.data.TFRecordDataset(sorted(glob.glob(results['paths'][f'{split}_records']))))
    assert len(records) == len(config.dataset.classes) * config.dataset.videos_per_class(split)
    example = tf.train.SequenceExample.FromString(records[0].numpy())
    flow_frames = example.feature_lists.feature_list['FORWARD_FLOW/image/encoded'].feature
    assert len(flow_frames) == config.dataset.num_frames


def test_plots_are_real_pngs(quick_run):
  _, results, _ = quick_run
  for name in ('training_curves', 'accuracy_plot'):
    image = cv2.imread(results['paths'][name])
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, name
    assert image.std() > 10, f'{name} is blank'


def test_student_saved_model_loads_with_plain_tensorflow_and_predicts(quick_run):
  config, results, _ = quick_run
  last_class = config.dataset.classes[-1]
  video = os.path.join(config.output_dir, 'videos', 'test', last_class, f'{last_class}_000.mp4')
  frames = video_reader.read_video(video, video_reader.DecodeConfig(short_side=0)).frames
  serving = tf.saved_model.load(results['paths']['d3d_saved_model']).signatures['serving_default']
  outputs = serving(video=tf.constant(frames[None]))
  probabilities = outputs['probabilities'].numpy()
  assert probabilities.shape == (1, len(config.dataset.classes))
  assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
  class_names = label_map.read_label_map(results['paths']['label_map'])
  best = int(np.argmax(probabilities[0]))
  assert outputs['top_k_labels'].numpy()[0, 0].decode() == class_names[best]


def test_two_stream_timing_computes_the_flow_of_the_sampled_frames_only(quick_run):
  config, _, _ = quick_run
  first_class = config.dataset.classes[0]
  video = os.path.join(config.output_dir, 'videos', 'test', first_class, f'{first_class}_000.mp4')
  decoded = video_reader.read_video(video, video_reader.DecodeConfig(short_side=0))
  frames = decoded.frames[:config.num_frames * config.stride]
  backend = flow_backends.create_backend(flow_backends.FlowConfig(tvl1=config.tvl1))
  whole_video = backend.video_flow(frames)  # every pair, as the converter stores it
  sampled = np.arange(0, len(frames), config.stride)
  assert config.stride > 1 and sampled[-1] == len(frames) - 2  # the last sampled frame's pair is the last pair
  flow = demo.sampled_flow(backend, frames, sampled)
  np.testing.assert_allclose(flow[sampled], whole_video[sampled], atol=1e-5)
  skipped = np.setdiff1d(np.arange(len(frames)), sampled)
  assert not flow[skipped].any()
  # At the last frame, the flow repeats the pair before it, as in the records.
  np.testing.assert_allclose(demo.sampled_flow(backend, frames, [len(frames) - 1])[-1], whole_video[-1], atol=1e-5)


def test_a_second_run_skips_every_completed_step_and_gives_the_same_results(quick_run):
  config, results, _ = quick_run
  again, printed = run_printing(config)
  for step in range(1, 9):
    lines = [line for line in printed.splitlines() if line.startswith(f'[demo {step}/9]')]
    assert lines and all(line.endswith('skipped') for line in lines), (step, lines)
  assert again['top_1'] == results['top_1']
  assert again['latency'] == results['latency']


def test_a_changed_dataset_setting_is_refused_rather_than_mixed(quick_run):
  config, _, _ = quick_run
  longer = dataclasses.replace(config.dataset, num_frames=config.dataset.num_frames + 2)
  changed = dataclasses.replace(config, dataset=longer)
  with pytest.raises(ValueError, match='another dataset'):
    demo.run_demo(changed)


def test_a_changed_recipe_is_refused_rather_than_answered_with_the_old_results(quick_run):
  """From the command line: the teacher and the baseline still fit, the student names the setting, no traceback."""
  config, _, _ = quick_run
  process = subprocess.run(
      [sys.executable, '-m', 'official_d3d.demo', '--quick', f'--output_dir={config.output_dir}',
       f'--distill_weight={config.distill_weight * 2}'],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  assert process.returncode == 1
  student_config = os.path.join(config.output_dir, 'models', 'd3d_student', 'config.json')
  assert f'error: {student_config} was written by a run with other settings (distillation.weight)' in process.stderr
  assert 'Traceback' not in process.stderr


def test_summary_gives_mean_and_spread_over_seeds(quick_run):
  _, results, _ = quick_run
  other = json.loads(json.dumps(results))
  other['seed'] = 1
  other['top_1']['d3d_student'] = results['top_1']['d3d_student'] + 0.5
  summary = demo.summarize([results, other])
  assert summary['seeds'] == [results['seed'], 1]
  student = summary['top_1']['d3d_student']
  assert student['mean'] == pytest.approx(results['top_1']['d3d_student'] + 0.25, abs=1e-4)
  assert student['std'] == pytest.approx(0.5 / np.sqrt(2), abs=1e-4)
  assert summary['top_1']['flow_teacher']['std'] == 0.0
  assert summary['student_gain']['values'][1] - summary['student_gain']['values'][0] == pytest.approx(0.5, abs=1e-4)
  assert 'D3D - RGB' in demo.format_summary(summary)


def test_settings_that_cannot_work_are_refused():
  with pytest.raises(ValueError, match='longer than'):
    demo.DemoConfig(num_frames=32)
  with pytest.raises(ValueError, match='must be >= crop'):
    demo.DemoConfig(crop_size=96)


def test_step_counts_train_cannot_use_are_refused_before_any_work(tmp_path):
  config = dataclasses.replace(demo.QUICK_CONFIG, output_dir=str(tmp_path / 'demo'), teacher_steps=7)
  with pytest.raises(ValueError, match='train_steps=7 must be a positive multiple'):
    demo.run_demo(config)
  assert not (tmp_path / 'demo').exists()
