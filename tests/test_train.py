"""`python -m official_d3d.train` and `run_experiment` on tiny real records: checkpoints, resume, evaluation."""

import contextlib
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
from official_d3d import callbacks
from official_d3d import train
from official_d3d import train_lib
from official_d3d.configs import config_flags
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

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
             *data_flags(records), '--eval_interval=2']
  process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert process.returncode == 0, process.stderr[-4000:]
  return model_dir, process


def test_cli_trains_evaluates_and_writes_checkpoints_config_summaries_and_metrics(flow_run, records):
  model_dir, process = flow_run
  assert 'warning' not in process.stderr.lower(), process.stderr  # nor Keras's about the evaluation's end
  # A checkpoint per loop of 2 steps.
  assert os.path.exists(os.path.join(model_dir, 'ckpt-2.index'))
  assert os.path.exists(os.path.join(model_dir, 'ckpt-4.index'))
  config = d3d_config.load(model_dir)
  assert (config.stream, config.data.num_classes, config.data.num_frames) == ('flow', 3, 4)
  assert config.model.depth_multiplier == 0.1  # from the flagfile
  assert glob.glob(os.path.join(model_dir, 'logs', 'train', 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(model_dir, 'logs', 'eval', 'events.out.tfevents.*'))
  history = callbacks.read_history(os.path.join(model_dir, callbacks.HISTORY_FILENAME))
  assert [entry['step'] for entry in history] == [2, 4] and all(np.isfinite(entry['loss']) for entry in history)
  with open(os.path.join(model_dir, train_lib.EVAL_METRICS_FILENAME)) as f:
    metrics = json.load(f)
  # --eval_interval=2: an evaluation after each loop, in the history; the last one is the final evaluation's.
  assert all({'val_loss', 'val_top_1', 'val_top_5'} <= set(entry) for entry in history)
  assert history[-1]['val_top_1'] == pytest.approx(metrics['top_1'])
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
    train_lib.run_experiment(config, 'train_and_eval', callbacks=[StopAtLoop(1)])
  interrupted = {'checkpoints': sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, 'ckpt-*.index'))),
                 'weights': [w.numpy() for w in factory.restore_network(model_dir)[0].weights]}
  start = RecordStartWeights()
  config.fusion_model_dir = teacher_dir
  results = train_lib.run_experiment(config, 'train_and_eval', callbacks=[start])
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
  with open(os.path.join(d3d_run['model_dir'], train_lib.TWO_STREAM_METRICS_FILENAME)) as f:
    fusion = json.load(f)
  assert set(fusion) >= {'rgb', 'flow', 'two_stream'} and fusion['flow_weight'] == 0.5
  # The flow stream of the fusion is the teacher evaluated on the same views: its own evaluation agrees.
  with open(os.path.join(flow_run[0], train_lib.EVAL_METRICS_FILENAME)) as f:
    flow_metrics = json.load(f)
  assert fusion['flow']['per_class_accuracy'] == flow_metrics['per_class_accuracy']
  assert fusion['rgb']['top_1'] == d3d_run['results']['eval']['top_1']


def test_eval_mode_evaluates_the_student_alone(d3d_run):
  config = d3d_config.from_dict(d3d_config.to_dict(d3d_run['config']))
  config.teacher_checkpoint = ''  # RGB only: the teacher is not needed
  config.fusion_model_dir = ''
  results = train_lib.run_experiment(config, 'eval')
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
    train_lib.run_experiment(config, 'train')
  config = d3d_config.load(model_dir)
  config.stream = 'rgb'
  with pytest.raises(ValueError, match='stream'):
    train_lib.run_experiment(config, 'eval')


def test_d3d_needs_a_flow_teacher(records, flow_run, tmp_path):
  config = d3d_config_for(records, tmp_path / 'no_teacher', '')
  with pytest.raises(ValueError, match='teacher_checkpoint'):
    train_lib.run_experiment(config, 'train')


def parse_flags(*argv):
  """The config and flag values of `python -m official_d3d.train ARGV` run from the repository root, as every
  documented command is: absl opens the nested --flagfile paths of the experiments from the working directory."""
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  with contextlib.chdir(REPO):
    flag_values(['train', *argv])
  return config_flags.config_from_flags(flag_values), flag_values


def parse_flagfile(path, *extra):
  return parse_flags(f'--flagfile={path}', *extra)


def expand_flagfile(name):
  """The flag lines of an experiment flagfile with its nested flagfiles expanded, as absl reads them."""
  with contextlib.chdir(REPO):
    return flags.FlagValues().read_flags_from_files([f'--flagfile={os.path.join(EXPERIMENTS, name)}'])


FLAGFILES = sorted(name for name in os.listdir(EXPERIMENTS) if name.endswith('.flags'))
BASES = [name for name in FLAGFILES if name.startswith('base_')]  # shared settings, included by the experiments

# The experiments as they were written out in full before they shared bases (issue 16): each must still give the
# config that these flags give on a plain command line.
PAPER = ('--num_frames=64 --stride=1 --crop_size=224 --train_resize_range=256,256 --eval_resize=256 --num_eval_clips=4 '
         '--num_eval_crops=1 --shuffle_buffer=1024 --first_temporal_kernel_size=3 --depth_multiplier=1.0 '
         '--dropout_rate=0.2 --optimizer=sgd --momentum=0.9 --weight_decay=1e-7 --schedule=step --decay_rate=0.1 '
         '--warmup_steps=0 --mixed_precision=mixed_bfloat16 --jit_compile=true').split()
KINETICS400 = PAPER + (
    '--train_pattern=/path/to/kinetics400/train-*.tfrecord --eval_pattern=/path/to/kinetics400/validate-*.tfrecord '
    '--label_map=/path/to/kinetics400/label_map.txt --num_classes=400 --global_batch_size=336 --eval_batch_size=56 '
    '--learning_rate=0.1 --step_boundaries=60000,70000 --train_steps=80000 --steps_per_loop=1000 --eval_interval=10000 '
    '--distribution_strategy=multi_worker_mirrored').split()
FINETUNE = PAPER + ('--global_batch_size=64 --eval_batch_size=16 --learning_rate=0.01 --steps_per_loop=500 '
                    '--distribution_strategy=mirrored').split()
UCF101 = FINETUNE + ('--train_pattern=/path/to/ucf101/train-*.tfrecord --eval_pattern=/path/to/ucf101/test-*.tfrecord '
                     '--label_map=/path/to/ucf101/label_map.txt --num_classes=101 --step_boundaries=6000 '
                     '--train_steps=8000 --eval_interval=2000').split()
HMDB51 = FINETUNE + ('--train_pattern=/path/to/hmdb51/train-*.tfrecord --eval_pattern=/path/to/hmdb51/test-*.tfrecord '
                     '--label_map=/path/to/hmdb51/label_map.txt --num_classes=51 --step_boundaries=3000 '
                     '--train_steps=4000 --eval_interval=1000').split()
D3D = '--stream=d3d --distill_target=logits --distill_loss=l2 --distill_weight=1.0 --distill_use_head=false'.split()
MODELS = '/path/to/models'
EXPERIMENT_FLAGS = {
    'kinetics400_s3dg_flow.flags': KINETICS400 + ['--stream=flow', f'--model_dir={MODELS}/kinetics400_s3dg_flow'],
    'kinetics400_s3dg_rgb.flags': KINETICS400 + ['--stream=rgb', f'--model_dir={MODELS}/kinetics400_s3dg_rgb'],
    'kinetics400_d3d.flags': KINETICS400 + D3D + [
        f'--model_dir={MODELS}/kinetics400_d3d', f'--teacher_checkpoint={MODELS}/kinetics400_s3dg_flow',
        f'--fusion_model_dir={MODELS}/kinetics400_s3dg_flow'],
    'ucf101_s3dg_flow.flags': UCF101 + [
        '--stream=flow', f'--model_dir={MODELS}/ucf101_s3dg_flow', f'--init_checkpoint={MODELS}/kinetics400_s3dg_flow'],
    'ucf101_s3dg_rgb.flags': UCF101 + [
        '--stream=rgb', f'--model_dir={MODELS}/ucf101_s3dg_rgb', f'--init_checkpoint={MODELS}/kinetics400_s3dg_rgb'],
    'ucf101_d3d.flags': UCF101 + D3D + [
        f'--model_dir={MODELS}/ucf101_d3d', f'--init_checkpoint={MODELS}/kinetics400_d3d',
        f'--teacher_checkpoint={MODELS}/ucf101_s3dg_flow', f'--fusion_model_dir={MODELS}/ucf101_s3dg_flow'],
    'hmdb51_s3dg_flow.flags': HMDB51 + [
        '--stream=flow', f'--model_dir={MODELS}/hmdb51_s3dg_flow', f'--init_checkpoint={MODELS}/kinetics400_s3dg_flow'],
    'hmdb51_d3d.flags': HMDB51 + D3D + [
        f'--model_dir={MODELS}/hmdb51_d3d', f'--init_checkpoint={MODELS}/kinetics400_d3d',
        f'--teacher_checkpoint={MODELS}/hmdb51_s3dg_flow', f'--fusion_model_dir={MODELS}/hmdb51_s3dg_flow'],
    'tiny_cpu.flags': (
        '--stream=flow --mode=train_and_eval --model_dir=/tmp/tiny_flow '
        '--train_pattern=/path/to/records/train-*.tfrecord --eval_pattern=/path/to/records/test-*.tfrecord '
        '--label_map=/path/to/records/label_map.txt --num_frames=8 --stride=1 --crop_size=32 '
        '--train_resize_range=36,44 --eval_resize=36 --global_batch_size=4 --eval_batch_size=4 --num_eval_clips=2 '
        '--num_eval_crops=1 --shuffle_buffer=16 --depth_multiplier=0.1 --min_depth=8 --dropout_rate=0.0 '
        '--distill_target=logits --distill_loss=l2 --distill_weight=1.0 --optimizer=sgd --learning_rate=0.05 '
        '--momentum=0.9 --weight_decay=1e-5 --schedule=cosine --warmup_steps=10 --train_steps=100 '
        '--steps_per_loop=20 --distribution_strategy=one_device --mixed_precision=float32 --jit_compile=false').split(),
}


@pytest.mark.parametrize('name', sorted(EXPERIMENT_FLAGS))
def test_experiment_flagfiles_give_the_config_they_gave_written_out_in_full(name):
  config, flag_values = parse_flagfile(os.path.join(EXPERIMENTS, name))
  expected_config, expected_values = parse_flags(*EXPERIMENT_FLAGS[name])
  assert config == expected_config
  assert flag_values.mode == expected_values.mode


@pytest.mark.parametrize('name', [name for name in FLAGFILES if name not in BASES])
def test_every_experiment_flagfile_gives_a_valid_config(name):
  config, flag_values = parse_flagfile(os.path.join(EXPERIMENTS, name))
  config.validate()
  assert flag_values.mode == 'train_and_eval'
  if name != 'tiny_cpu.flags':  # the paper's settings
    assert (config.data.num_frames, config.data.crop_size) == (64, 224)
    assert (config.train.optimizer, config.train.momentum) == ('sgd', 0.9)
  if config.stream == 'd3d':
    assert config.teacher_checkpoint
  # Each setting is written once where it belongs: no file of the include chain overrides another's.
  names = [line.split('=')[0] for line in expand_flagfile(name)]
  assert not sorted({flag for flag in names if names.count(flag) > 1})


def test_flagfile_bases_are_included_by_path_from_the_repository_root_and_cannot_run_alone():
  included = set()
  for name in FLAGFILES:
    with open(os.path.join(EXPERIMENTS, name)) as f:
      included.update(line.strip()[len('--flagfile='):] for line in f if line.startswith('--flagfile='))
  assert included == {f'official_d3d/configs/experiments/{base}' for base in BASES}
  for base in BASES:  # without a model_dir a run stops before it starts
    assert not [line for line in expand_flagfile(base) if line.startswith(('--model_dir=', '--stream='))]


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
  assert train_lib.resolve_config(config).model.pixel_range == 'minus_one_to_one'  # from scratch: the default
  config.init_checkpoint = weights_path
  resolved = train_lib.resolve_config(config)
  assert resolved.model.pixel_range == 'zero_to_one'
  config.model.pixel_range = 'minus_one_to_one'
  assert train_lib.resolve_config(config).model.pixel_range == 'minus_one_to_one'
  # Resumed, the run keeps what it was trained with.
  d3d_config.save(resolved, resolved.model_dir)
  config.model.pixel_range = ''
  config.init_checkpoint = ''
  assert train_lib.resolve_config(config).model.pixel_range == 'zero_to_one'
