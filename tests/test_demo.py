"""`python -m examples.motion_demo --quick` end to end: real generated videos, TV-L1 records, three trained networks, a
SavedModel; and the recipes it trains them on.

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
from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from d3d_core import label_map
from d3d_core import video_reader
from examples.motion_demo import __main__ as command
from examples.motion_demo import config as demo_config
from examples.motion_demo import latency
from examples.motion_demo import pipeline
from examples.motion_demo import report
from official_d3d import motion_probe
from official_d3d import train
from official_d3d.configs import config_flags
from tfrecord_tools import flow_backends
from tfrecord_tools import make_motion_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_printing(config):
  """(results, what the demo printed)."""
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    results = pipeline.run_demo(config)
  return results, printed.getvalue()


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  """(config, results, printed output) of one quick demo."""
  config = dataclasses.replace(demo_config.QUICK_CONFIG, output_dir=str(tmp_path_factory.mktemp('demo')))
  results, printed = run_printing(config)
  return config, results, printed


def experiment(config, name):
  return demo_config.experiment_config(config, demo_config.DemoPaths(config.output_dir), name)


@pytest.mark.slow
def test_prints_the_table_with_the_four_accuracies_and_the_latencies(quick_run):
  _, results, printed = quick_run
  for name in report.ACCURACY_NAMES:
    row = next(line for line in printed.splitlines() if line.startswith(name + ' '))
    assert row.split()[1] == f'{results["top_1"][name]:.3f}', row
  assert 'D3D SavedModel' in printed and 'two-stream (incl. TV-L1)' in printed
  assert f'two-stream / D3D: {results["latency"]["two_stream_over_d3d"]:.1f}x' in printed
  # The motion probe's rows: each network's end-point errors, beside zero and mean flow.
  assert motion_probe.summary(results['motion_probe']) in printed
  assert set(results['motion_probe']['networks']) == set(demo_config.NETWORKS)
  assert os.path.exists(results['paths']['motion_probe_plot'])
  # The paths and the next commands, so a user can go on.
  assert results['paths']['d3d_saved_model'] in printed
  assert 'python -m official_d3d.serving.client' in printed


@pytest.mark.slow
def test_the_console_is_short_and_warning_free_and_the_log_file_holds_the_rest(quick_run):
  _, results, printed = quick_run
  lines = printed.rstrip().splitlines()
  assert len(lines) < 100, printed  # two screens
  assert not [line for line in lines if 'warning' in line.lower()], printed
  # Ends with the table, then only the outputs (the log among them) and the next commands.
  outputs = lines.index('Outputs:')
  assert lines[outputs - 4].startswith('zero flow') and lines[outputs - 3].startswith('RGB - D3D, paired')
  assert lines.index('Next:') > outputs
  assert f'  {"log":<24} {results["paths"]["log"]}' in lines
  # One closing line per network's training, not one per loop; checkpoints are in the log, not on the console.
  assert sum('trained to step' in line for line in lines) == len(demo_config.NETWORKS)
  assert ': saved ' not in printed
  with open(results['paths']['log']) as f:
    log = f.read()
  assert '[demo 10/10] Results' in log and ': saved ' in log and 'flow_teacher step' in log


@pytest.mark.slow
def test_results_json_holds_accuracies_latencies_and_existing_paths(quick_run):
  config, results, _ = quick_run
  with open(os.path.join(config.output_dir, pipeline.RESULTS_FILENAME)) as f:
    saved = json.load(f)
  assert saved['top_1'] == results['top_1']
  assert set(saved['top_1']) == set(report.ACCURACY_NAMES)
  # The machine a seed's figures depend on (CPU, cores, instruction sets) is recorded with them.
  assert saved['machine']['cores'] == os.cpu_count() and saved['machine']['tensorflow'] == tf.__version__
  # So are the settings of each network, as train.py resolved them.
  assert saved['config']['d3d_student']['distillation']['target'] == 'Mixed_3c'
  assert saved['config']['demo']['latency_clips'] == config.latency_clips
  num_test = len(config.dataset.classes) * config.dataset.videos_per_class_test
  assert saved['num_test_videos'] == num_test
  for name, accuracy in saved['top_1'].items():
    # A video-level accuracy over num_test videos is a multiple of 1 / num_test.
    assert 0.0 <= accuracy <= 1.0 and round(accuracy * num_test, 6) == round(accuracy * num_test), name
  latency_figures = saved['latency']
  # Each pipeline is timed apart (medians over 2 clips here), so no ordering of the times holds on a loaded machine
  # (CI saw two-stream 102 ms against its TV-L1 part alone 121 ms); the benchmark's figures are the demo's.
  assert all(latency_figures[f'{name}_ms_per_clip'] > 0 for name in ('d3d', 'two_stream', 'tvl1_flow'))
  assert latency_figures['clips_timed'] == config.latency_clips
  assert latency_figures['two_stream_over_d3d'] == pytest.approx(
      latency_figures['two_stream_ms_per_clip'] / latency_figures['d3d_ms_per_clip'], rel=0.01)
  for name in ('train_records', 'test_records'):
    assert glob.glob(saved['paths'][name]), name
  for name in ('label_map', 'flow_teacher_model_dir', 'rgb_baseline_model_dir', 'd3d_student_model_dir',
               'd3d_saved_model', 'training_curves', 'accuracy_plot', 'confusion_plot'):
    assert os.path.exists(saved['paths'][name]), name
  # Per class and confusion: each model's test videos, row by true class, in the label map's order.
  assert saved['class_names'] == label_map.read_label_map(saved['paths']['label_map'])
  assert sorted(saved['class_names']) == sorted(config.dataset.classes)
  for name in report.ACCURACY_NAMES:
    confusion = np.array(saved['confusion'][name])
    assert confusion.shape == (len(config.dataset.classes),) * 2
    assert (confusion.sum(axis=1) == config.dataset.videos_per_class_test).all(), name
    assert np.trace(confusion) == pytest.approx(saved['top_1'][name] * num_test, abs=0.5 + 1e-6), name
    assert set(saved['per_class_accuracy'][name]) == set(config.dataset.classes)
    kind, motion = saved['factor_accuracy'][name]['kind'], saved['factor_accuracy'][name]['motion']
    assert min(kind, motion) >= saved['top_1'][name] - 0.5 / num_test, name


@pytest.mark.slow
def test_records_hold_every_video_with_flow(quick_run):
  config, results, _ = quick_run
  for split in make_motion_dataset.SPLITS:
    records = list(tf.data.TFRecordDataset(sorted(glob.glob(results['paths'][f'{split}_records']))))
    assert len(records) == len(config.dataset.classes) * config.dataset.videos_per_class(split)
    example = tf.train.SequenceExample.FromString(records[0].numpy())
    flow_frames = example.feature_lists.feature_list['FORWARD_FLOW/image/encoded'].feature
    assert len(flow_frames) == config.dataset.num_frames


@pytest.mark.slow
def test_every_network_logged_its_loops_and_the_plots_are_real_pngs(quick_run):
  config, results, _ = quick_run
  for name in demo_config.NETWORKS:
    with open(os.path.join(results['paths'][f'{name}_model_dir'], 'history.jsonl')) as f:
      steps = [json.loads(line)['step'] for line in f]
    train_config = experiment(config, name).train
    assert steps == list(range(train_config.steps_per_loop, train_config.train_steps + 1, train_config.steps_per_loop))
  for name in ('training_curves', 'accuracy_plot', 'confusion_plot'):
    image = cv2.imread(results['paths'][name])
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, name
    assert image.std() > 10, f'{name} is blank'


@pytest.mark.slow
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


@pytest.mark.slow
def test_two_stream_timing_computes_the_flow_of_the_sampled_frames_only(quick_run):
  config, _, _ = quick_run
  data = experiment(config, 'flow_teacher').data
  first_class = config.dataset.classes[0]
  video = os.path.join(config.output_dir, 'videos', 'test', first_class, f'{first_class}_000.mp4')
  decoded = video_reader.read_video(video, video_reader.DecodeConfig(short_side=0))
  frames = decoded.frames[:data.num_frames * data.stride]
  backend = flow_backends.create_backend(flow_backends.FlowConfig(backend='opencv', tvl1=config.tvl1))
  whole_video = backend.video_flow(frames)  # every pair, as the converter stores it
  sampled = np.arange(0, len(frames), data.stride)
  assert data.stride > 1 and sampled[-1] == len(frames) - 2  # the last sampled frame's pair is the last pair
  flow = latency.sampled_flow(backend, frames, sampled)
  np.testing.assert_allclose(flow[sampled], whole_video[sampled], atol=1e-5)
  skipped = np.setdiff1d(np.arange(len(frames)), sampled)
  assert not flow[skipped].any()
  # At the last frame, the flow repeats the pair before it, as in the records.
  np.testing.assert_allclose(latency.sampled_flow(backend, frames, [len(frames) - 1])[-1], whole_video[-1], atol=1e-5)


@pytest.mark.slow
def test_a_second_run_skips_every_completed_step_and_gives_the_same_results(quick_run):
  config, results, _ = quick_run
  again, printed = run_printing(config)
  for step in range(1, 10):
    lines = [line for line in printed.splitlines() if line.startswith(f'[demo {step}/10]')]
    assert lines and all(line.endswith('skipped') for line in lines), (step, lines)
  assert again['top_1'] == results['top_1']
  assert again['latency'] == results['latency']
  assert again['motion_probe'] == results['motion_probe']


@pytest.mark.slow
def test_a_changed_dataset_setting_is_refused_rather_than_mixed(quick_run):
  config, _, _ = quick_run
  longer = dataclasses.replace(config.dataset, num_frames=config.dataset.num_frames + 2)
  changed = dataclasses.replace(config, dataset=longer)
  with pytest.raises(ValueError, match='another dataset'):
    pipeline.run_demo(changed)


@pytest.mark.slow
def test_a_changed_recipe_is_refused_rather_than_answered_with_the_old_results(quick_run):
  """From the command line: the teacher and the baseline still fit, the student names the setting, no traceback."""
  config, _, _ = quick_run
  weight = experiment(config, 'd3d_student').distillation.weight
  process = subprocess.run(
      [sys.executable, '-m', 'examples.motion_demo', '--quick', f'--output_dir={config.output_dir}',
       f'--distill_weight={weight * 2}'],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  assert process.returncode == 1
  student_config = os.path.join(config.output_dir, 'models', 'd3d_student', 'config.json')
  assert f'error: {student_config} was written by a run with other settings (distillation.weight)' in process.stderr
  assert 'Traceback' not in process.stderr


def test_summary_gives_mean_and_spread_over_seeds():
  results = {'seed': 0, 'top_1': {'flow_teacher': 0.75, 'rgb_baseline': 0.25, 'd3d_student': 0.5, 'two_stream': 0.75},
             'latency': {'d3d_ms_per_clip': 10.0, 'two_stream_ms_per_clip': 60.0, 'two_stream_over_d3d': 6.0},
             'factor_accuracy': {'d3d_student': {'kind': 1.0, 'motion': 0.5}},
             'motion_probe': {'endpoints': ['Mixed_3c'],
                              'networks': {'rgb_baseline': {'epe_per_video': {'Mixed_3c': [0.9, 1.0, 0.8]}},
                                           'd3d_student': {'epe_per_video': {'Mixed_3c': [0.8, 0.8, 0.8]}}}}}
  other = json.loads(json.dumps(results))
  other['seed'] = 1
  other['top_1']['d3d_student'] = results['top_1']['d3d_student'] + 0.5
  summary = report.summarize([results, other])
  assert summary['seeds'] == [results['seed'], 1]
  student = summary['top_1']['d3d_student']
  assert student['mean'] == pytest.approx(results['top_1']['d3d_student'] + 0.25, abs=1e-4)
  assert student['std'] == pytest.approx(0.5 / np.sqrt(2), abs=1e-4)
  assert summary['top_1']['flow_teacher']['std'] == 0.0
  assert summary['student_gain']['values'][1] - summary['student_gain']['values'][0] == pytest.approx(0.5, abs=1e-4)
  # Baseline 0.25, two-stream 0.75: the students at 0.5 and 1.0 close half of the gap and twice it.
  assert summary['gap_closed']['values'] == [0.5, 1.5] and summary['gap_closed']['mean'] == 1.0
  # A seed without a gap (the baseline as good as two-stream, as in --quick runs) has no gap closed to average.
  no_gap = json.loads(json.dumps(other))
  no_gap['top_1']['rgb_baseline'] = no_gap['top_1']['two_stream']
  gap_closed = report.summarize([results, other, no_gap])['gap_closed']
  assert gap_closed['mean'] == 1.0 and gap_closed['std'] == pytest.approx(np.sqrt(0.5), abs=1e-4)
  assert np.isnan(gap_closed['values'][2])
  assert summary['factor_accuracy'] == {'d3d_student': {'kind': {'mean': 1.0, 'std': 0.0, 'values': [1.0, 1.0]},
                                                        'motion': {'mean': 0.5, 'std': 0.0, 'values': [0.5, 0.5]}}}
  probe_gain = summary['probe_gain']['Mixed_3c']  # per video 0.1, 0.2, 0.0: mean 0.1, standard error 0.1 / sqrt(3)
  assert probe_gain['values'] == [0.1, 0.1] and probe_gain['stderr'] == [round(0.1 / np.sqrt(3), 4)] * 2
  printed = report.format_summary(summary)
  assert 'D3D - RGB' in printed and 'Mixed_3c' in printed and 'gap closed     1.00 +- 0.71' in printed


def test_kind_and_motion_accuracies_and_the_gap_closed():
  names = make_motion_dataset.complementary_classes(('red', 'blue'), ('translate_left', 'translate_right'))
  # red_left, red_right, blue_left, blue_right; rows: true class, columns: top-1 prediction.
  confusion = [[2, 2, 0, 0],  # right kind always, right motion half the time: what RGB alone manages
               [0, 4, 0, 0],
               [0, 0, 0, 4],  # right kind, wrong motion
               [0, 1, 0, 3]]  # one of the wrong kind but the right motion
  assert report.factor_accuracy(confusion, names) == {'kind': 15 / 16, 'motion': 10 / 16}
  assert report.factor_accuracy(np.eye(8, dtype=int), make_motion_dataset.TRANSLATION_CLASSES) == {}
  top_1 = {'rgb_baseline': 0.5, 'd3d_student': 0.65, 'two_stream': 0.8}
  assert report.gap_closed(top_1) == pytest.approx(0.5)
  assert np.isnan(report.gap_closed({**top_1, 'two_stream': 0.5}))


def test_the_class_set_and_the_dataset_seed_come_from_flags(tmp_path):
  flag_values = flags.FlagValues()
  command.define_flags(flag_values)
  flag_values(['demo', f'--output_dir={tmp_path}', '--class_set=motions'])
  assert command.config_from_flags(flag_values).dataset == demo_config.MOTION_ONLY_DATASET
  flag_values(['demo', f'--output_dir={tmp_path}', '--class_set=kinds_x_motions'])
  dataset = command.config_from_flags(flag_values).dataset
  assert dataset == demo_config.DEMO_DATASET and len(dataset.classes) == 8
  assert {make_motion_dataset.parse_class(name)[0] for name in dataset.classes} == set(make_motion_dataset.KINDS)
  flag_values(['demo', f'--output_dir={tmp_path}', '--dataset_seed=3'])
  assert command.config_from_flags(flag_values).dataset == dataclasses.replace(demo_config.DEMO_DATASET, seed=3)


def test_validation_holds_out_the_first_training_videos_of_each_class(tmp_path):
  config = dataclasses.replace(demo_config.DemoConfig(), validation_videos_per_class=2)
  paths = demo_config.DemoPaths(str(tmp_path))
  os.makedirs(paths.videos)
  rows = [(f'train/{label}/{label}_{i:03d}.mp4', label) for label in ('a', 'b') for i in range(5)]
  with open(os.path.join(paths.videos, 'train.csv'), 'w') as f:
    f.write('path,label\n' + ''.join(f'{path},{label}\n' for path, label in rows))
  demo_config.write_validation_manifests(config, paths)
  def listed(split):
    with open(demo_config.manifest_path(config, paths, split)) as f:
      return [tuple(line.split(',')) for line in f.read().splitlines()[1:]]
  assert listed('test') == [row for row in rows if row[0].endswith(('_000.mp4', '_001.mp4'))]
  assert listed('train') == [row for row in rows if row not in listed('test')]
  assert demo_config.manifest_path(demo_config.DemoConfig(), paths, 'test') == os.path.join(paths.videos, 'test.csv')
  with pytest.raises(ValueError, match='validation_videos_per_class'):
    demo_config.check(dataclasses.replace(
        config, validation_videos_per_class=config.dataset.videos_per_class_train), paths)


def test_several_seeds_train_on_one_data_set_made_once(tmp_path):
  tiny = dataclasses.replace(demo_config.QUICK_CONFIG.dataset, classes=demo_config.DEMO_DATASET.classes[:2],
                             videos_per_class_train=1, videos_per_class_test=1)
  config = dataclasses.replace(demo_config.QUICK_CONFIG, output_dir=str(tmp_path), dataset=tiny)
  runs = [pipeline.seed_config(config, seed, several=True) for seed in (0, 1)]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    for run in runs:
      pipeline.generate_videos(run, demo_config.DemoPaths.of(run))
  assert printed.getvalue().count('Generating 4 videos') == 1 and 'already in' in printed.getvalue()
  first, second = (demo_config.DemoPaths.of(run) for run in runs)
  assert first.videos == second.videos == str(tmp_path / 'videos') and first.records == second.records
  assert len(glob.glob(os.path.join(first.videos, '*', '*', '*.mp4'))) == 4
  assert (first.model_dir('rgb_baseline'), second.model_dir('rgb_baseline')) == (
      str(tmp_path / 'seed_0' / 'models' / 'rgb_baseline'), str(tmp_path / 'seed_1' / 'models' / 'rgb_baseline'))
  # Alone, a seed keeps everything in output_dir.
  alone = demo_config.DemoPaths.of(pipeline.seed_config(config, 1, several=False))
  assert alone.videos == str(tmp_path / 'videos') and alone.model_dir('rgb_baseline') == str(
      tmp_path / 'models' / 'rgb_baseline')


def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path):
  paths = demo_config.DemoPaths(str(tmp_path / 'demo'))
  for overrides, problem in (({'rgb_baseline': ('--num_frames=32',)}, 'longer than'),
                             ({'d3d_student': ('--crop_size=96',)}, 'smaller than data.crop_size'),
                             ({'flow_teacher': ('--train_steps=7',)}, 'train_steps=7 must be a positive multiple')):
    with pytest.raises(ValueError, match=problem):
      pipeline.run_demo(dataclasses.replace(demo_config.DemoConfig(), output_dir=paths.root, overrides=overrides))
  with pytest.raises(ValueError, match='latency_clips'):
    demo_config.check(dataclasses.replace(demo_config.DemoConfig(), latency_clips=0), paths)
  assert not os.path.exists(paths.root)


def test_the_demo_makes_the_videos_the_figures_were_measured_with():
  classes = make_motion_dataset.complementary_classes(make_motion_dataset.KINDS, ('translate_left', 'translate_right'))
  assert demo_config.DEMO_DATASET == dataclasses.replace(
      make_motion_dataset.MotionDatasetConfig(), classes=classes, width=40, height=40, videos_per_class_train=40,
      videos_per_class_test=32, object_radius=(0.3, 0.4), translation_speed=(0.012, 0.022),
      translation_jitter_degrees=10.0, background_drift_speed=0.003, noise_std=(1.0, 3.0))


# The settings the README's and BUILD_NOTES' figures were measured with, written out in full; the recipes must keep
# giving them.
MEASURED = ('--num_frames=8 --stride=2 --crop_size=32 --train_resize_range=32,36 --eval_resize=32 --random_flip=false '
            '--global_batch_size=8 --eval_batch_size=8 --num_eval_clips=1 --num_eval_crops=1 --shuffle_buffer=256 '
            '--deterministic=true --depth_multiplier=0.25 --min_depth=8 --dropout_rate=0.0 '
            '--first_temporal_kernel_size=7 --batch_norm_momentum=0.9 --optimizer=adamw --weight_decay=1e-5 '
            '--schedule=cosine --steps_per_loop=20 --eval_interval=500 --jit_compile=true '
            '--convert_on_accelerator=false').split()
RGB_SCHEDULE = '--train_steps=1500 --warmup_steps=150 --learning_rate=0.0005'.split()
MEASURED_RECIPES = {
    'flow_teacher': MEASURED + '--stream=flow --train_steps=600 --warmup_steps=60 --learning_rate=0.001'.split(),
    'rgb_baseline': MEASURED + RGB_SCHEDULE + ['--stream=rgb'],
    'd3d_student': MEASURED + RGB_SCHEDULE + (
        '--stream=d3d --distill_target=Mixed_3c --distill_loss=l2 --distill_weight=100.0 '
        '--distill_use_head=true --distill_start_step=300 --distill_ramp_steps=200 --distill_end_step=1000').split(),
}
# What --quick changes, after each recipe.
QUICK_DISTILLATION = '--distill_start_step=2 --distill_ramp_steps=0 --distill_end_step=5'.split()
QUICK = ('--global_batch_size=4 --eval_batch_size=4 --train_steps=6 --steps_per_loop=3 --warmup_steps=0 '
         '--eval_interval=0 --jit_compile=false').split()


def train_config(*argv):
  """The config `python -m official_d3d.train ARGV` resolves, run from the repository root."""
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  with contextlib.chdir(REPO_ROOT):
    flag_values(['train', *argv])
  return config_flags.config_from_flags(flag_values)


@pytest.mark.parametrize('name', sorted(demo_config.NETWORKS))
def test_recipes_give_the_measured_settings_to_the_demo_and_to_train(name, tmp_path):
  paths = demo_config.DemoPaths(str(tmp_path))
  demo_flags = [f'--train_pattern={paths.record_pattern("train")}', f'--eval_pattern={paths.record_pattern("test")}',
                f'--label_map={paths.label_map}', f'--model_dir={paths.model_dir(name)}', '--seed=3']
  if name == 'd3d_student':
    demo_flags.append(f'--teacher_checkpoint={paths.model_dir("flow_teacher")}')
  seed_3 = dataclasses.replace(demo_config.DemoConfig(), output_dir=str(tmp_path), seed=3)
  assert experiment(seed_3, name) == train_config(*MEASURED_RECIPES[name], *demo_flags)
  # The recipe file is a flagfile of train.py, with no setting written twice in its chain of bases.
  assert train_config(demo_config.recipe_flag(name), *demo_flags) == experiment(seed_3, name)
  with contextlib.chdir(REPO_ROOT):
    lines = flags.FlagValues().read_flags_from_files([demo_config.recipe_flag(name)])
  names = [line.split('=')[0] for line in lines]
  assert not sorted({flag for flag in names if names.count(flag) > 1})
  quick = dataclasses.replace(demo_config.QUICK_CONFIG, output_dir=str(tmp_path), seed=3)
  quick_distillation = QUICK_DISTILLATION if name == 'd3d_student' else []
  assert experiment(quick, name) == train_config(*MEASURED_RECIPES[name], *QUICK, *quick_distillation, *demo_flags)


def test_the_command_line_passes_steps_and_distillation_to_their_networks(tmp_path):
  """--train_steps and --teacher_steps warm up for a tenth of the steps; --distill_* reach the student alone."""
  flag_values = flags.FlagValues()
  command.define_flags(flag_values)
  flag_values(['demo', '--quick', f'--output_dir={tmp_path}', '--train_steps=90', '--teacher_steps=30',
               '--distill_weight=2.0', '--distill_temperature=3.0', '--distill_ramp_steps=7'])
  config = command.config_from_flags(flag_values)
  teacher, baseline, student = (experiment(config, name) for name in demo_config.NETWORKS)
  assert (teacher.train.train_steps, teacher.train.warmup_steps) == (30, 3)
  assert (baseline.train.train_steps, baseline.train.warmup_steps) == (90, 9)
  assert (student.train.train_steps, student.train.warmup_steps) == (90, 9)
  distillation = student.distillation
  assert (distillation.weight, distillation.temperature, distillation.ramp_steps) == (2.0, 3.0, 7)
  assert (distillation.start_step, distillation.end_step) == (2, 5)  # the quick preset's, not replaced
  assert student.distillation.target == 'Mixed_3c'  # the recipe's, not replaced
  assert baseline.distillation == teacher.distillation == type(student.distillation)()
  assert config.dataset == demo_config.QUICK_CONFIG.dataset


def test_the_command_line_takes_any_endpoint_as_the_distillation_target_and_refuses_other_names(tmp_path):
  flag_values = flags.FlagValues()
  command.define_flags(flag_values)
  flag_values(['demo', f'--output_dir={tmp_path}', '--distill_target=Mixed_4f'])
  assert experiment(command.config_from_flags(flag_values), 'd3d_student').distillation.target == 'Mixed_4f'
  with pytest.raises(flags.IllegalFlagValueError, match='Mixed_9z'):
    flag_values(['demo', '--distill_target=Mixed_9z'])
