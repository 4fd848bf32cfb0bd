"""`python -m official_d3d.train` and `run_experiment` on tiny real records: checkpoints, resume, evaluation."""

import glob
import json
import os
import subprocess
import sys

from absl import flags
import keras
import numpy as np
import pytest

import training_records
from official_d3d import train
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, 'official_d3d', 'configs', 'experiments')
TINY_FLAGFILE = os.path.join(EXPERIMENTS, 'tiny_cpu.flags')


@pytest.fixture(scope='module')
def records(tmp_path_factory, bikes_video):
  return training_records.write_records(tmp_path_factory.mktemp('records'), bikes_video)


def data_flags(records):
  """Flags that point the tiny flagfile at the test records and shrink it to 4 steps of 4-frame 32-pixel clips."""
  return [f'--train_pattern={records["train"]}', f'--eval_pattern={records["eval"]}',
          f'--label_map={records["label_map"]}', '--num_frames=4', '--stride=2', '--crop_size=32',
          f'--train_resize_range={training_records.HEIGHT},{training_records.WIDTH}',
          f'--eval_resize={training_records.HEIGHT}', '--global_batch_size=2', '--eval_batch_size=2',
          '--num_eval_clips=2', '--num_eval_crops=2', '--train_steps=4', '--steps_per_loop=2', '--warmup_steps=0']


@pytest.fixture(scope='module')
def flow_run(records, tmp_path_factory):
  """The flow teacher trained by the command line on the tiny flagfile: (model_dir, completed process)."""
  model_dir = str(tmp_path_factory.mktemp('flow'))
  command = [sys.executable, '-m', 'official_d3d.train', f'--flagfile={TINY_FLAGFILE}', f'--model_dir={model_dir}',
             *data_flags(records)]
  process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert process.returncode == 0, process.stderr[-4000:]
  return model_dir, process


def test_cli_trains_evaluates_and_writes_checkpoints_config_summaries_and_metrics(flow_run, records):
  model_dir, _ = flow_run
  # A checkpoint per loop of 2 steps.
  assert os.path.exists(os.path.join(model_dir, 'ckpt-2.index'))
  assert os.path.exists(os.path.join(model_dir, 'ckpt-4.index'))
  config = d3d_config.load(model_dir)
  assert (config.stream, config.data.num_classes, config.data.num_frames) == ('flow', 3, 4)
  assert config.model.depth_multiplier == 0.1  # from the flagfile
  assert glob.glob(os.path.join(model_dir, 'logs', 'train', 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(model_dir, 'logs', 'eval', 'events.out.tfevents.*'))
  with open(os.path.join(model_dir, train.EVAL_METRICS_FILENAME)) as f:
    metrics = json.load(f)
  assert metrics['step'] == 4 and metrics['num_videos'] == 3 and metrics['num_views'] == 4
  assert set(metrics['per_class_accuracy']) == set(training_records.CLASS_NAMES)
  assert 0.0 <= metrics['top_1'] <= metrics['top_5'] == 1.0  # 3 classes: the label is always in the top 5


def test_cli_refuses_other_settings_in_a_trained_model_dir_with_the_message_alone(flow_run, records):
  model_dir, _ = flow_run
  command = [sys.executable, '-m', 'official_d3d.train', f'--flagfile={TINY_FLAGFILE}', f'--model_dir={model_dir}',
             *data_flags(records), '--learning_rate=0.5']
  process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert process.returncode == 1
  assert f'error: {model_dir}/config.json was written by a run with other settings (train.learning_rate)' in (
      process.stderr)
  assert 'Traceback' not in process.stderr


def d3d_config_for(records, model_dir, teacher_dir):
  config = training_records.tiny_config(records, model_dir, 'd3d')
  config.teacher_checkpoint = teacher_dir
  return config


class Preempted(Exception):
  pass


class StopAtLoop(keras.callbacks.Callback):
  """Kills training at the start of a loop, after the previous loop's checkpoint, like a preempted job."""

  def __init__(self, loop):
    super().__init__()
    self.loop = loop

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.loop:
      raise Preempted(f'preempted at loop {epoch}')


class RecordStartWeights(keras.callbacks.Callback):
  def on_train_begin(self, logs=None):
    self.weights = [w.numpy().copy() for w in self.model.network.weights]


@pytest.fixture(scope='module')
def d3d_run(records, flow_run, tmp_path_factory):
  """A D3D run interrupted after its first checkpoint, then resumed with a two-stream evaluation."""
  teacher_dir, _ = flow_run
  model_dir = str(tmp_path_factory.mktemp('d3d'))
  config = d3d_config_for(records, model_dir, teacher_dir)
  with pytest.raises(Preempted):
    train.run_experiment(config, 'train_and_eval', callbacks=[StopAtLoop(1)])
  interrupted = {'checkpoints': sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, 'ckpt-*.index'))),
                 'weights': [w.numpy() for w in factory.load_inference_network(model_dir)[0].weights]}
  start = RecordStartWeights()
  config.fusion_model_dir = teacher_dir
  results = train.run_experiment(config, 'train_and_eval', callbacks=[start])
  return {'model_dir': model_dir, 'config': config, 'interrupted': interrupted, 'resumed_from': start.weights,
          'results': results}


def test_interrupted_run_resumes_from_its_checkpoint_to_the_final_step(d3d_run):
  assert d3d_run['interrupted']['checkpoints'] == ['ckpt-2.index']
  # The resumed run started from the checkpoint's student, not from a fresh initialisation.
  for saved, resumed in zip(d3d_run['interrupted']['weights'], d3d_run['resumed_from']):
    np.testing.assert_array_equal(saved, resumed)
  results = d3d_run['results']
  assert results['step'] == 4
  assert len(results['history']['loss']) == 1  # only the remaining loop
  assert set(results['history']) >= {'loss', 'cls_loss', 'distill_loss', 'top_1', 'top_5'}
  assert os.path.exists(os.path.join(d3d_run['model_dir'], 'ckpt-4.index'))


def test_two_stream_fusion_reports_each_stream_and_their_average(d3d_run, flow_run):
  with open(os.path.join(d3d_run['model_dir'], train.TWO_STREAM_METRICS_FILENAME)) as f:
    fusion = json.load(f)
  assert set(fusion) >= {'rgb', 'flow', 'two_stream'} and fusion['flow_weight'] == 0.5
  # The flow stream of the fusion is the teacher evaluated on the same views: its own evaluation agrees.
  with open(os.path.join(flow_run[0], train.EVAL_METRICS_FILENAME)) as f:
    flow_metrics = json.load(f)
  assert fusion['flow']['per_class_accuracy'] == flow_metrics['per_class_accuracy']
  assert fusion['rgb']['top_1'] == d3d_run['results']['eval']['top_1']


def test_eval_mode_evaluates_the_student_alone(d3d_run):
  config = d3d_config.from_dict(d3d_config.to_dict(d3d_run['config']))
  config.teacher_checkpoint = ''  # RGB only: the teacher is not needed
  config.fusion_model_dir = ''
  results = train.run_experiment(config, 'eval')
  assert 'history' not in results and results['step'] == 4
  expected = d3d_run['results']['eval']
  assert results['eval']['per_class_accuracy'] == expected['per_class_accuracy']
  assert results['eval']['top_5'] == expected['top_5']


def test_resuming_with_other_settings_is_refused(flow_run):
  model_dir, _ = flow_run
  config = d3d_config.load(model_dir)
  config.data.num_frames = 8
  config.train.learning_rate = 1.0
  with pytest.raises(ValueError, match=r'data\.num_frames, train\.learning_rate'):
    train.run_experiment(config, 'train')
  config = d3d_config.load(model_dir)
  config.stream = 'rgb'
  with pytest.raises(ValueError, match='stream'):
    train.run_experiment(config, 'eval')


def test_d3d_needs_a_flow_teacher(records, flow_run, tmp_path):
  config = d3d_config_for(records, tmp_path / 'no_teacher', '')
  with pytest.raises(ValueError, match='teacher_checkpoint'):
    train.run_experiment(config, 'train')


def parse_flagfile(path, *extra):
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values(['train', f'--flagfile={path}', *extra])
  return train.config_from_flags(flag_values), flag_values


@pytest.mark.parametrize('name', sorted(os.listdir(EXPERIMENTS)))
def test_every_experiment_flagfile_gives_a_valid_config(name):
  config, flag_values = parse_flagfile(os.path.join(EXPERIMENTS, name))
  config.validate()
  assert flag_values.mode == 'train_and_eval'
  if name != 'tiny_cpu.flags':  # the paper's settings
    assert (config.data.num_frames, config.data.crop_size) == (64, 224)
    assert (config.train.optimizer, config.train.momentum) == ('sgd', 0.9)
  if config.stream == 'd3d':
    assert config.teacher_checkpoint


def test_flags_fill_every_section_and_later_flags_win():
  config, _ = parse_flagfile(TINY_FLAGFILE, '--distill_weight=2.5', '--step_boundaries=5,8', '--stream=rgb',
                             '--mixed_precision=mixed_bfloat16', '--jit_compile')
  assert config.stream == 'rgb'
  assert config.distillation.weight == 2.5
  assert config.train.step_boundaries == (5, 8)
  assert config.train.mixed_precision == 'mixed_bfloat16' and config.train.jit_compile
  assert config.model.depth_multiplier == 0.1 and config.data.num_frames == 8


def test_pixel_range_comes_from_the_network_a_run_starts_from_unless_told_otherwise(records, tmp_path):
  imported = training_records.tiny_config(records, '', 'rgb')
  imported.data.num_classes = training_records.NUM_CLASSES
  imported.model.pixel_range = 'zero_to_one'  # as the authors' released checkpoints are fed
  weights_path = str(tmp_path / 'released.weights.h5')
  factory.build_network(imported, 'rgb').save_weights(weights_path)
  with open(tmp_path / 'released.json', 'w') as f:
    json.dump({'model': d3d_config.to_dict(imported)['model'], 'num_classes': training_records.NUM_CLASSES,
               'input_channels': 3}, f)

  config = training_records.tiny_config(records, tmp_path / 'fine_tuned', 'rgb')
  assert train.resolve_config(config).model.pixel_range == 'minus_one_to_one'  # from scratch: the default
  config.init_checkpoint = weights_path
  resolved = train.resolve_config(config)
  assert resolved.model.pixel_range == 'zero_to_one'
  config.model.pixel_range = 'minus_one_to_one'
  assert train.resolve_config(config).model.pixel_range == 'minus_one_to_one'
  # Resumed, the run keeps what it was trained with.
  d3d_config.save(resolved, resolved.model_dir)
  config.model.pixel_range = ''
  config.init_checkpoint = ''
  assert train.resolve_config(config).model.pixel_range == 'zero_to_one'
