"""SavedModel export: what TF Serving loads gives the evaluation pipeline's predictions, on every signature.

The networks are real trainer runs (see serving_models); the clips are real bikes frames written as the records
`tfrecord_tools` writes. The Keras reference goes through the evaluation input pipeline, so a match shows that the
preprocessing inside the SavedModel is the evaluation's.
"""

import dataclasses
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import serving_models
import slim_checkpoints
import training_records
from d3d_core import cli
from d3d_core import schema
from official_d3d import evaluation
from official_d3d import export_saved_model
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.modeling import factory
from tfrecord_tools import flow_backends
from tfrecord_tools import sequence_example

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / 'saved_model_cli'

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
# Exists on Linux and refuses new folders even to root, whom folder permissions do not stop (tests may run as root).
UNWRITABLE_DIR = pathlib.Path('/sys/fs')

# Runs in a fresh interpreter that cannot import the project (cwd and PYTHONPATH point elsewhere), as TF Serving runs
# a SavedModel without the code that wrote it.
FRESH_PROCESS = r'''
import pickle, sys
import tensorflow as tf

saved_model, inputs_path, outputs_path = sys.argv[1:]
with open(inputs_path, 'rb') as f:
  inputs = pickle.load(f)
signatures = tf.saved_model.load(saved_model).signatures

def run(name, **kwargs):
  return {key: value.numpy() for key, value in signatures[name](**kwargs).items()}

outputs = {
    'serve_sequence_example': run('serve_sequence_example',
                                  sequence_example=tf.constant(inputs['sequence_examples'])),
    'serving_default': [run('serving_default', video=tf.constant(video[None])) for video in inputs['videos']],
    'serve_jpeg': [run('serve_jpeg', frames=tf.constant([frames])) for frames in inputs['jpegs']],
    'project_modules': sorted(m for m in sys.modules if m.split('.')[0] in ('official_d3d', 'tfrecord_tools')),
}
with open(outputs_path, 'wb') as f:
  pickle.dump(outputs, f)
'''


@dataclasses.dataclass
class Video:
  """One real video as a record, and the same frames as each signature takes them."""
  sequence_example: bytes
  jpegs: list  # the record's encoded frames
  frames: np.ndarray  # uint8 [T, H, W, 3]: the record's JPEGs decoded (so all signatures see the same pixels)
  flow_images: np.ndarray  # uint8 [T, H, W, 3]: the record's flow images decoded


def bikes_frames(video, first, count, height, width):
  capture = cv2.VideoCapture(str(video))
  capture.set(cv2.CAP_PROP_POS_FRAMES, first)
  frames = []
  for _ in range(count):
    ok, bgr = capture.read()
    assert ok
    frames.append(cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


def make_video(frames, with_flow):
  example = sequence_example.build_sequence_example(
      media_id='bikes', label_index=0, label_string=training_records.CLASS_NAMES[0], frames=frames,
      timestamps_us=[40000 * t for t in range(len(frames))], frame_rate=25.0,
      flow=flow_backends.OpenCVFarneback().video_flow(frames) if with_flow else None)
  jpegs = [f.bytes_list.value[0] for f in example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature]
  flow_images = np.zeros([0])
  if with_flow:
    flow_images = np.stack([tf.io.decode_image(f.bytes_list.value[0]).numpy()
                            for f in example.feature_lists.feature_list[schema.FLOW_ENCODED].feature])
  return Video(example.SerializeToString(), jpegs, np.stack([tf.io.decode_jpeg(j).numpy() for j in jpegs]),
               flow_images)


def two_videos(bikes_video, with_flow):
  """A 12-frame landscape video (longer than the 7-frame clip span) and a 2-frame portrait one (the clip loops),
  at sizes other than the training records'."""
  return [make_video(bikes_frames(bikes_video, 100, 12, 72, 96), with_flow),
          make_video(bikes_frames(bikes_video, 180, 2, 60, 44)[:, :, ::-1], with_flow)]


@pytest.fixture(scope='module')
def videos(bikes_video):
  """RGB only: the student needs no flow anywhere."""
  return two_videos(bikes_video, with_flow=False)


@pytest.fixture(scope='module')
def flow_videos(bikes_video):
  return two_videos(bikes_video, with_flow=True)


@pytest.fixture(scope='module')
def student_signatures(student_export):
  return tf.saved_model.load(student_export).signatures


def evaluation_views(model_dir, videos, tmp_path, modality='rgb', **data_overrides):
  """(the run's network, one centre view per video `[N, 1, T, S, S, C]` from the evaluation pipeline)."""
  network, config = factory.restore_network(model_dir)
  records = str(tmp_path / f'eval_{modality}.tfrecord')
  with tf.io.TFRecordWriter(records) as writer:
    for video in videos:
      writer.write(video.sequence_example)
  data_config = dataclasses.replace(config.data, eval_pattern=records, num_eval_clips=1, num_eval_crops=1,
                                    eval_batch_size=len(videos), **data_overrides)
  features, _ = next(iter(video_input.build_eval_dataset(data_config, (modality,),
                                                         pixel_range=config.model.pixel_range)))
  return network, features[modality]


def evaluation_outputs(model_dir, videos, tmp_path, modality='rgb', **data_overrides):
  """(logits, probabilities) of the run's network on one centre view per video, through the evaluation pipeline."""
  network, views = evaluation_views(model_dir, videos, tmp_path, modality, **data_overrides)
  logits = network(views[:, 0], training=False)['logits'].numpy()
  return logits, evaluation.multi_view_probabilities(network, views).numpy()


def check_top_k(indices, labels, probabilities, k=2):
  """The indices are those of the k most probable classes, best first (up to ties), the labels their names."""
  np.testing.assert_allclose(probabilities[np.asarray(indices)], np.sort(probabilities)[::-1][:k], **TOLERANCE)
  assert list(labels) == [training_records.CLASS_NAMES[i].encode() for i in indices]


def test_export_writes_a_servable_version_with_its_label_map(student_export):
  version = pathlib.Path(student_export)
  assert version.name == '1'
  assert (version / 'saved_model.pb').is_file() and (version / 'variables').is_dir()
  assert sorted(os.listdir(version.parent)) == ['1']  # the staging folder was renamed, nothing else is left
  assert (version / 'assets' / 'label_map.txt').read_text().splitlines() == list(training_records.CLASS_NAMES)


def test_fresh_tensorflow_process_gives_the_evaluation_predictions(student_export, runs, videos, tmp_path):
  logits, probabilities = evaluation_outputs(runs.d3d_dir, videos, tmp_path)
  assert np.abs(logits[0] - logits[1]).max() > 0.1, 'the test network must answer differently to different videos'

  inputs = {'sequence_examples': [v.sequence_example for v in videos], 'videos': [v.frames for v in videos],
            'jpegs': [v.jpegs for v in videos]}
  (tmp_path / 'inputs.pkl').write_bytes(pickle.dumps(inputs))
  environment = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
  result = subprocess.run([sys.executable, '-c', FRESH_PROCESS, student_export, 'inputs.pkl', 'outputs.pkl'],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  outputs = pickle.loads((tmp_path / 'outputs.pkl').read_bytes())
  assert outputs['project_modules'] == []

  by_signature = {
      'serve_sequence_example': [{k: v[i] for k, v in outputs['serve_sequence_example'].items()}
                                 for i in range(len(videos))],
      'serving_default': [{k: v[0] for k, v in o.items()} for o in outputs['serving_default']],
      'serve_jpeg': [{k: v[0] for k, v in o.items()} for o in outputs['serve_jpeg']],
  }
  for signature, predictions in by_signature.items():
    for i, prediction in enumerate(predictions):
      np.testing.assert_allclose(prediction['logits'], logits[i], **TOLERANCE, err_msg=f'{signature} video {i}')
      np.testing.assert_allclose(prediction['probabilities'], probabilities[i], **TOLERANCE)
      check_top_k(prediction['top_k_indices'], prediction['top_k_labels'], probabilities[i])


@pytest.mark.parametrize('modality', ['rgb', 'flow'])
def test_serving_graph_clips_are_the_evaluation_pipelines_views(runs, videos, flow_videos, tmp_path, modality):
  """Every signature's clip equals, value for value, the view the evaluation pipeline takes of the same record."""
  model_dir, cases = (runs.d3d_dir, videos) if modality == 'rgb' else (runs.flow_dir, flow_videos)
  network, views = evaluation_views(model_dir, cases, tmp_path, modality)
  config = d3d_config.load(model_dir)
  data_config = export_saved_model.serving_data_config(config.data, export_saved_model.ServingConfig())
  graph = export_saved_model.ServingGraph(network, modality, data_config, 2, None, config.model.pixel_range)
  for i, video in enumerate(cases):
    decoded = video.frames if modality == 'rgb' else video.flow_images
    from_decoded = graph.clip(tf.constant(decoded)).numpy()
    from_record = graph.sequence_example_clip(tf.constant(video.sequence_example)).numpy()
    np.testing.assert_array_equal(from_record, views[i, 0], err_msg=f'video {i}')
    np.testing.assert_array_equal(from_decoded, views[i, 0], err_msg=f'video {i}')
    if modality == 'rgb':
      np.testing.assert_array_equal(graph.clip(tf.constant(video.jpegs)).numpy(), views[i, 0])


def test_imported_released_weights_are_served_on_their_own_pixel_range(runs, videos, tmp_path):
  """Released checkpoints were fed image / 255: imported, exported and served, they still are."""
  student, _ = factory.restore_network(runs.d3d_dir)
  checkpoint = slim_checkpoints.write(student, str(tmp_path / 'slim' / 'model.ckpt'))
  weights = tmp_path / 'imported' / 'd3d.weights.h5'
  process = subprocess.run([sys.executable, '-m', 'official_d3d.tools.import_slim_checkpoint',
                            f'--checkpoint={checkpoint}', f'--output={weights}', '--depth_multiplier=0.1',
                            '--min_depth=8'], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  serving = export_saved_model.ServingConfig(num_frames=4, crop_size=32, resize=40)
  version = export_saved_model.export(str(weights), str(tmp_path / 'serving'), serving=serving,
                                      label_map_path=runs.records['label_map'])
  served = tf.saved_model.load(version).signatures['serve_jpeg'](frames=tf.constant([videos[0].jpegs]))

  imported, views = evaluation_views(str(weights), videos[:1], tmp_path, num_frames=4, crop_size=32, eval_resize=40)
  assert float(tf.reduce_min(views)) >= 0.0  # [0, 1], as the importer's .json says
  logits = imported(views[:, 0], training=False)['logits'].numpy()
  np.testing.assert_allclose(served['logits'].numpy()[0], logits[0], **TOLERANCE)
  on_minus_one_to_one = imported(views[:, 0] * 2.0 - 1.0, training=False)['logits'].numpy()
  assert np.abs(on_minus_one_to_one[0] - logits[0]).max() > 0.1, 'the test must tell the two ranges apart'


def test_a_batch_is_answered_video_by_video(student_signatures, videos):
  clip = videos[0].frames
  batch = np.stack([clip, clip[:, :, ::-1]])
  together = student_signatures['serving_default'](video=tf.constant(batch))['logits'].numpy()
  alone = [student_signatures['serving_default'](video=tf.constant(v[None]))['logits'].numpy()[0] for v in batch]
  np.testing.assert_allclose(together, np.stack(alone), **TOLERANCE)
  assert np.abs(together[0] - together[1]).max() > 0.01


def test_saved_model_cli_lists_the_signatures_and_runs_one(student_export, runs, videos, tmp_path):
  shown = subprocess.run([str(SAVED_MODEL_CLI), 'show', '--all', '--dir', student_export], capture_output=True,
                         text=True, timeout=300, check=True).stdout
  for signature, input_name, dtype in (('serving_default', 'video', 'DT_UINT8'), ('serve_jpeg', 'frames', 'DT_STRING'),
                                       ('serve_sequence_example', 'sequence_example', 'DT_STRING')):
    section = shown.split(f"signature_def['{signature}']:")[1].split('signature_def[')[0]
    assert re.search(rf"inputs\['{input_name}'\] tensor_info:\s+dtype: {dtype}", section), section
    for output, output_dtype in (('logits', 'DT_FLOAT'), ('probabilities', 'DT_FLOAT'),
                                 ('top_k_indices', 'DT_INT32'), ('top_k_labels', 'DT_STRING')):
      assert re.search(rf"outputs\['{output}'\] tensor_info:\s+dtype: {output_dtype}", section), section
    assert 'tensorflow/serving/predict' in section

  # `run` loads the SavedModel with a TF1 session, as TF Serving's C++ loader does: variables and the label table
  # must be restored that way too.
  np.save(tmp_path / 'video.npy', videos[0].frames[None])
  subprocess.run([str(SAVED_MODEL_CLI), 'run', '--dir', student_export, '--tag_set', 'serve', '--signature_def',
                  'serving_default', '--inputs', f'video={tmp_path / "video.npy"}', '--outdir', str(tmp_path / 'out')],
                 capture_output=True, text=True, timeout=300, check=True)
  logits, probabilities = evaluation_outputs(runs.d3d_dir, videos[:1], tmp_path)
  np.testing.assert_allclose(np.load(tmp_path / 'out' / 'logits.npy'), logits, **TOLERANCE)
  check_top_k(np.load(tmp_path / 'out' / 'top_k_indices.npy')[0],
              np.load(tmp_path / 'out' / 'top_k_labels.npy', allow_pickle=True)[0], probabilities[0])


def _bad_requests(video: Video):
  """{case: (signature, input name, request, the error's expected words)}."""
  frames, jpegs = video.frames, video.jpegs
  truncated_jpeg = jpegs[0][:len(jpegs[0]) // 3]  # a JPEG start, so only decoding finds it broken
  empty_record = tf.train.SequenceExample().SerializeToString()
  return {
      'video_of_rank_4': (
          'serving_default', 'video', frames,
          'serving_default: video must be uint8 [batch, frames, height, width, 3]: expected rank 5; got shape] '
          '[12 72 96 3]'),
      'video_of_1_channel': (
          'serving_default', 'video', frames[None, ..., :1],
          'expected 3 channels in the last dimension; got shape] [1 12 72 96 1]'),
      'video_without_frames': (
          'serving_default', 'video', frames[None, :0],
          'expected at least 1 frame per video (the model samples 4, looping shorter videos); got shape] '
          '[1 0 72 96 3]'),
      'jpegs_of_rank_1': (
          'serve_jpeg', 'frames', np.array(jpegs, object),
          'serve_jpeg: frames must be string [batch, frames] of encoded images: expected rank 2; got shape] [12]'),
      'jpegs_with_a_non_image': (
          'serve_jpeg', 'frames', np.array([[jpegs[0], b'<html>not a frame</html>']], object),
          'expected JPEG- or PNG-encoded frames; these are neither, at positions:] [[0 1]]'),
      'truncated_jpeg': ('serve_jpeg', 'frames', np.array([[truncated_jpeg]], object), 'Invalid JPEG data'),
      'jpegs_without_frames': ('serve_jpeg', 'frames', np.zeros([1, 0], object), 'expected at least 1 frame per video'),
      'sequence_examples_of_rank_2': (
          'serve_sequence_example', 'sequence_example', np.array([[video.sequence_example]], object),
          'serve_sequence_example: sequence_example must be string [batch] of serialized tf.train.SequenceExample: '
          'expected rank 1; got shape] [1 1]'),
      'sequence_example_without_frames': (
          'serve_sequence_example', 'sequence_example', np.array([empty_record], object),
          "each SequenceExample must store encoded frames under 'image/encoded': expected at least 1 frame"),
  }


BAD_REQUESTS = ('video_of_rank_4', 'video_of_1_channel', 'video_without_frames', 'jpegs_of_rank_1',
                'jpegs_with_a_non_image', 'truncated_jpeg', 'jpegs_without_frames', 'sequence_examples_of_rank_2',
                'sequence_example_without_frames')


@pytest.mark.parametrize('case', BAD_REQUESTS)
def test_bad_requests_fail_saying_what_was_expected(student_signatures, videos, case):
  signature, input_name, request, words = _bad_requests(videos[0])[case]
  dtype = tf.uint8 if signature == 'serving_default' else tf.string
  # Assert messages come back C-escaped: a quote may have a backslash before it.
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(words).replace("'", r"\\?'")):
    student_signatures[signature](**{input_name: tf.constant(request, dtype)})


def test_versions_are_never_overwritten(student_export, runs, tmp_path):
  base = pathlib.Path(student_export).parent
  assert export_saved_model.next_version(str(base)) == 2
  with pytest.raises(FileExistsError, match='versions are never overwritten'):
    export_saved_model.export(runs.d3d_dir, str(base), version=1)
  for name in ('3', 'latest', '.tmp-9-abc'):
    (tmp_path / name).mkdir()
  assert export_saved_model.next_version(str(tmp_path)) == 4
  assert export_saved_model.next_version(str(tmp_path / 'new')) == 1


def test_serving_settings_are_checked():
  data_config = d3d_config.DataConfig(num_frames=4, crop_size=32, eval_resize=40)
  with pytest.raises(d3d_config.ConfigError, match='data.eval_resize=40 resizes frames to a short side of 40, smaller '
                     'than data.crop_size=64'):
    export_saved_model.serving_data_config(data_config, export_saved_model.ServingConfig(crop_size=64))
  served = export_saved_model.serving_data_config(data_config, export_saved_model.ServingConfig(num_frames=16))
  assert (served.num_frames, served.crop_size, served.num_eval_clips, served.num_eval_crops) == (16, 32, 1, 1)


def test_command_line_exports_the_flow_teacher_taking_flow(runs, flow_videos, tmp_path):
  base = tmp_path / 'flow_serving'
  result = subprocess.run(
      [sys.executable, '-m', 'official_d3d.export_saved_model', f'--model_dir={runs.flow_dir}',
       f'--export_dir={base}', '--version=7', '--num_frames=6', '--crop_size=24', '--resize=28', '--top_k=3'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == str(base / '7')
  assert result.stderr == ''  # no warning, nor TensorFlow's start-up notices

  signatures = tf.saved_model.load(str(base / '7')).signatures
  assert list(signatures['serving_default'].structured_input_signature[1]) == ['flow']
  logits, probabilities = evaluation_outputs(runs.flow_dir, flow_videos, tmp_path, 'flow', num_frames=6,
                                             crop_size=24, eval_resize=28)
  assert np.abs(logits[0] - logits[1]).max() > 0.1
  from_records = signatures['serve_sequence_example'](
      sequence_example=tf.constant([v.sequence_example for v in flow_videos]))
  np.testing.assert_allclose(from_records['logits'].numpy(), logits, **TOLERANCE)
  for i, video in enumerate(flow_videos):
    from_images = signatures['serving_default'](flow=tf.constant(video.flow_images[None]))
    np.testing.assert_allclose(from_images['logits'].numpy()[0], logits[i], **TOLERANCE)
    assert from_images['top_k_labels'].shape == (1, 3)
    np.testing.assert_allclose(from_images['probabilities'].numpy()[0], probabilities[i], **TOLERANCE)


def run_module(module, *args, env=None):
  """`python -m module args` from the repository root, as a user runs the commands."""
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def one_line_error(result, *words) -> str:
  """The `error:` line of a command that failed as it should: exit status 1, one such line holding `words`, no
  traceback."""
  assert result.returncode == cli.EXIT_ERROR, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  for word in words:
    assert str(word) in errors[0], errors[0]
  return errors[0]


def export_command(model_dir, export_dir, *args, env=None):
  return run_module('official_d3d.export_saved_model', f'--model_dir={model_dir}', f'--export_dir={export_dir}', *args,
                    env=env)


def test_export_logs_no_warning_and_renames_no_input(runs, tmp_path):
  """At --verbosity=0 (INFO), a SavedModel's save logs what it renames; the signatures' captures have names it
  keeps."""
  result = export_command(runs.d3d_dir, tmp_path / 'serving', '--verbosity=0')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert any('Exported the d3d network' in line for line in lines), result.stderr[-3000:]
  assert not [line for line in lines if 'renamed' in line or line.startswith(('W', 'E'))], result.stderr[-3000:]


def test_export_names_a_missing_model_dir(tmp_path):
  model_dir, export_dir = tmp_path / 'no_such_run', tmp_path / 'serving'
  one_line_error(export_command(model_dir, export_dir), model_dir, 'neither a model_dir nor a checkpoint prefix')
  assert not export_dir.exists()


def test_traceback_variable_shows_the_whole_traceback(tmp_path):
  model_dir = tmp_path / 'no_such_run'
  result = export_command(model_dir, tmp_path / 'serving', env={**os.environ, cli.TRACEBACK_VARIABLE: '1'})
  assert result.returncode == cli.EXIT_ERROR
  traceback_start = result.stderr.index('Traceback (most recent call last)')
  assert f'FileNotFoundError: {model_dir} is neither' in result.stderr[traceback_start:]
  assert result.stderr.splitlines()[-1].startswith(f'error: {model_dir} is neither')


def test_export_names_a_model_dir_without_checkpoint(tmp_path):
  model_dir, export_dir = tmp_path / 'run', tmp_path / 'serving'
  model_dir.mkdir()
  one_line_error(export_command(model_dir, export_dir), f'no checkpoint in {model_dir}')
  assert not export_dir.exists()


def test_export_names_a_model_dir_without_config(runs, tmp_path):
  model_dir, export_dir = tmp_path / 'run', tmp_path / 'serving'
  shutil.copytree(runs.d3d_dir, model_dir, ignore=shutil.ignore_patterns('config.json', 'logs'))
  one_line_error(export_command(model_dir, export_dir), model_dir / 'config.json', 'not found')
  assert not export_dir.exists()


def test_export_refuses_an_existing_version_and_keeps_it(runs, student_export):
  version = pathlib.Path(student_export)
  saved = (version / 'saved_model.pb').read_bytes()
  one_line_error(export_command(runs.d3d_dir, version.parent, '--version=1'), f'{version} exists',
                 'versions are never overwritten')
  assert sorted(os.listdir(version.parent)) == ['1'] and (version / 'saved_model.pb').read_bytes() == saved


def test_export_refuses_a_negative_version(runs, tmp_path):
  export_dir = tmp_path / 'serving'
  one_line_error(export_command(runs.d3d_dir, export_dir, '--version=-1'), 'non-negative integer, got -1')
  assert not export_dir.exists()


def test_export_refuses_an_export_dir_that_is_a_file(runs, tmp_path):
  export_dir = tmp_path / 'serving'
  export_dir.write_text('not a folder')
  one_line_error(export_command(runs.d3d_dir, export_dir), f'export_dir {export_dir} is a file')
  assert export_dir.read_text() == 'not a folder'


@pytest.mark.skipif(not UNWRITABLE_DIR.is_dir(), reason='needs Linux sysfs')
def test_export_names_an_export_dir_it_cannot_write(runs):
  entries = sorted(os.listdir(UNWRITABLE_DIR))
  one_line_error(export_command(runs.d3d_dir, UNWRITABLE_DIR), f'cannot write to export_dir {UNWRITABLE_DIR}')
  assert sorted(os.listdir(UNWRITABLE_DIR)) == entries


def test_export_names_a_missing_label_map(runs, tmp_path):
  label_map_path, export_dir = tmp_path / 'label_map.txt', tmp_path / 'serving'
  one_line_error(export_command(runs.d3d_dir, export_dir, f'--label_map={label_map_path}'),
                 f'label map {label_map_path} not found')
  assert not export_dir.exists()


def test_export_refuses_the_weights_of_a_diverged_run(runs, tmp_path):
  network, config = factory.restore_network(runs.d3d_dir)
  weights = factory.network_variables(network)
  for path, value in (('Logits/Conv2d_0c_1x1/kernel', np.nan), ('Logits/Conv2d_0c_1x1/bias', np.inf)):
    values = weights[path].numpy()
    values.flat[0] = value
    weights[path].assign(values)
  model_dir, export_dir = tmp_path / 'diverged_run', tmp_path / 'serving'
  d3d_config.save(config, str(model_dir))
  serving_models.save_network(network, str(model_dir), step=800)
  one_line_error(export_command(model_dir, export_dir), f'checkpoint {model_dir / "ckpt-800"}',
                 f'2 of {len(weights)} weights hold NaN or Inf',
                 '(Logits/Conv2d_0c_1x1/kernel, Logits/Conv2d_0c_1x1/bias)', 'the training run diverged')
  assert not export_dir.exists()
