"""Records converted from a real video carry MediaPipe's MediaSequence keys, in the places and types `schema` lists,
and read back with the specs of MediaPipe's Kinetics reader and Model Garden's video_classification decoder."""

import numpy as np
import pytest
import tensorflow as tf

from d3d_core import flow_quantization
from d3d_core import schema
from d3d_core import video_reader
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests

NUM_FRAMES = 4
FPS = 25.0
_DTYPES = {'bytes_list': schema.BYTES, 'int64_list': schema.INT64, 'float_list': schema.FLOAT}
_FLOW_KEYS = {key for key in schema.KEY_TYPES if key.startswith(schema.FLOW_PREFIX + '/')}


def _convert(folder, bikes_video, flow_backend='opencv'):
  """Two clips of one real video, converted into one shard; returns the SequenceExamples by media id."""
  csv_path = folder / 'list.csv'
  csv_path.write_text(f'path,label,start,end\n{bikes_video.name},bike,0,1\n{bikes_video.name},bike,3,4\n')
  config = convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=str(csv_path), video_root=str(bikes_video.parent)),
      output_dir=str(folder / 'records'), name='clips', num_shards=1, num_workers=1,
      decode=video_reader.DecodeConfig(fps=FPS, short_side=48, max_frames=NUM_FRAMES),
      flow=flow_backends.FlowConfig(backend=flow_backend))
  assert convert_lib.run_local(config)['videos_written'] == 2
  [path] = convert_lib.shard_paths(config.output_dir, config.name, 1)
  examples = [tf.train.SequenceExample.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
  return {e.context.feature[schema.MEDIA_ID].bytes_list.value[0].decode(): e for e in examples}


@pytest.fixture(scope='module')
def converted(tmp_path_factory, bikes_video):
  """The same job converted twice into separate folders, to compare reruns."""
  return [_convert(tmp_path_factory.mktemp(f'run{i}'), bikes_video) for i in range(2)]


def _layout(example):
  """{key: (place, dtype)} as the record holds it; also checks one value per context key and per frame."""
  layout = {}
  for key, feature in example.context.feature.items():
    kind = feature.WhichOneof('kind')
    assert len(getattr(feature, kind).value) == 1, key
    layout[key] = (schema.CONTEXT, _DTYPES[kind])
  for key, feature_list in example.feature_lists.feature_list.items():
    kinds = {feature.WhichOneof('kind') for feature in feature_list.feature}
    assert len(kinds) == 1 and all(len(getattr(f, f.WhichOneof('kind')).value) == 1 for f in feature_list.feature), key
    assert len(feature_list.feature) == NUM_FRAMES, key
    layout[key] = (schema.FEATURE_LIST, _DTYPES[kinds.pop()])
  return layout


def _context(example, key):
  feature = example.context.feature[key]
  return getattr(feature, feature.WhichOneof('kind')).value[0]


def _feature_list(example, key):
  return [getattr(f, f.WhichOneof('kind')).value[0] for f in example.feature_lists.feature_list[key].feature]


def test_every_key_has_mediapipes_place_and_type(converted):
  for example in converted[0].values():
    assert _layout(example) == schema.KEY_TYPES


def test_rgb_only_records_hold_every_key_but_the_flow_ones(tmp_path, bikes_video):
  for example in _convert(tmp_path, bikes_video, flow_backend='none').values():
    assert _layout(example) == {k: v for k, v in schema.KEY_TYPES.items() if k not in _FLOW_KEYS}


def test_example_id_is_the_media_id_and_the_same_in_a_rerun(converted):
  first, second = converted
  assert sorted(first) == ['bikes_0.000_1.000', 'bikes_3.000_4.000']
  for run in converted:
    assert {media_id: _context(e, schema.EXAMPLE_ID).decode() for media_id, e in run.items()} == {
        media_id: media_id for media_id in first}
  assert {k: e.SerializeToString(deterministic=True) for k, e in first.items()} == {
      k: e.SerializeToString(deterministic=True) for k, e in second.items()}


def test_clip_times_are_half_open_and_flow_metadata_matches_the_frames(converted):
  for example in converted[0].values():
    times = _feature_list(example, schema.IMAGE_TIMESTAMP)
    start = _context(example, schema.CLIP_START_TIMESTAMP)
    assert times == [start + i * 40_000 for i in range(NUM_FRAMES)]
    assert _context(example, schema.CLIP_END_TIMESTAMP) == start + NUM_FRAMES * 40_000  # exclusive, as MediaPipe
    assert _feature_list(example, schema.FLOW_TIMESTAMP) == times
    for image_key, flow_key in ((schema.IMAGE_HEIGHT, schema.FLOW_HEIGHT), (schema.IMAGE_WIDTH, schema.FLOW_WIDTH),
                                (schema.IMAGE_FRAME_RATE, schema.FLOW_FRAME_RATE)):
      assert _context(example, flow_key) == _context(example, image_key)
    assert (_context(example, schema.IMAGE_CHANNELS), _context(example, schema.FLOW_CHANNELS)) == (3, 3)
    assert _context(example, schema.IMAGE_FRAME_RATE) == FPS


def test_mediapipe_kinetics_reader_spec_reads_the_records(converted):
  """The features MediaPipe's Kinetics `parse_fn` asks for parse, and its fixed +-20 px flow decoding agrees with
  ours for records written with the default bound."""
  context_spec = {
      schema.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string),
      schema.LABEL_STRING: tf.io.FixedLenFeature([], tf.string),
      schema.LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
  }
  sequence_spec = {key: tf.io.FixedLenSequenceFeature([], tf.string) for key in (schema.IMAGE_ENCODED,
                                                                                 schema.FLOW_ENCODED)}
  for media_id, example in converted[0].items():
    assert _context(example, schema.FLOW_BOUND) == 20.0
    context, sequence = tf.io.parse_single_sequence_example(example.SerializeToString(), context_spec, sequence_spec)
    assert (context[schema.EXAMPLE_ID].numpy().decode(), context[schema.LABEL_STRING].numpy()) == (media_id, b'bike')
    assert context[schema.LABEL_INDEX].numpy() == 0
    images = tf.map_fn(tf.io.decode_jpeg, sequence[schema.FLOW_ENCODED], fn_output_signature=tf.uint8)
    mediapipe_flow = (tf.image.convert_image_dtype(images, tf.float32)[..., :2] - 0.5) * 2 * 20
    np.testing.assert_allclose(mediapipe_flow, flow_quantization.dequantize_flow(images.numpy(), 20.0), atol=1e-4)


@pytest.mark.parametrize('image_field_key', [schema.IMAGE_ENCODED, schema.FLOW_ENCODED])
def test_model_garden_decoder_spec_reads_rgb_and_flow(converted, image_field_key):
  """Model Garden's video_classification Decoder parses `label_field_key` as a VarLenFeature and `image_field_key` as
  JPEG strings, decoded with feature_shape[-1] = 3 channels; zero-centred, stored flow becomes flow / bound."""
  example = converted[0]['bikes_0.000_1.000']
  context, sequence = tf.io.parse_single_sequence_example(
      example.SerializeToString(), {schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64)},
      {image_field_key: tf.io.FixedLenSequenceFeature([], tf.string)})
  assert tf.sparse.to_dense(context[schema.LABEL_INDEX]).numpy().tolist() == [0]
  frames = tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3), sequence[image_field_key],
                     fn_output_signature=tf.uint8)
  assert frames.shape == (NUM_FRAMES, _context(example, schema.IMAGE_HEIGHT), _context(example, schema.IMAGE_WIDTH), 3)
  if image_field_key == schema.FLOW_ENCODED:
    zero_centred = tf.cast(frames, tf.float32) * (2 / 255) - 1
    np.testing.assert_allclose(zero_centred[..., :2], flow_quantization.decode_normalized_flow(frames), atol=1e-6)

