"""tf.data input pipeline: SequenceExample records -> batches of RGB and flow clips with their labels.

Training samples one clip per video at a random position and applies one random scale, crop and flip to all the
requested modalities, so that RGB and flow stay aligned frame by frame and pixel by pixel. Evaluation takes
`num_eval_clips x num_eval_crops` deterministic views per video. Only the requested modalities are parsed, and only
what the network sees is decoded: in training, the crop window of each sampled frame (its position is drawn from
the frame size in the record's context before decoding); in evaluation, each sampled frame once, however many views
share it.

Training clips leave the pipeline as float32, or with `data.convert_on_accelerator` (the default) as uint8 with each
clip's flip and flow scale still to apply, which the training step does on the accelerator (`training_clips`): the
CPU then only reads, decodes and batches bytes.

Every record is checked as it is read: a video without frames of a requested modality, RGB and flow of different
lengths, or a label outside the label map stop the pipeline with an error naming the record's file and media id
(`RecordError` via `record_error`), rather than train on it or fail later with a traceback.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from d3d_core import network_inputs
from d3d_core import schema
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import data_service
from official_d3d.ops import training_clips
from official_d3d.ops import video_ops

AUTOTUNE = tf.data.AUTOTUNE
MAX_INTERLEAVED_FILES = 16


class RecordError(ValueError):
  """A record the pipeline cannot use (the message names its file and media id): the data's to fix."""


# Marks the messages of the in-graph record checks, so that `record_error` finds them in TensorFlow's error text.
_RECORD_ERROR_MARK = 'bad record: '


def parse_example(serialized, modalities: Sequence[str]
                  ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor, tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
  """Serialized SequenceExample -> (encoded frames `[N]` per modality, int32 label, media id, int32 (height, width)
  of the frames).

  A modality missing from the record parses as no frames, which `check_record` reports with the record's name; a
  missing frame size parses as 0, which `decode_train_example` reports.
  """
  context, sequences = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          schema.LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
          schema.MEDIA_ID: tf.io.FixedLenFeature([], tf.string, default_value=''),
          schema.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
          schema.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
      },
      sequence_features={
          network_inputs.MODALITIES[name].feature_key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
          for name in modalities
      })
  encoded = {name: sequences[network_inputs.MODALITIES[name].feature_key] for name in modalities}
  frame_size = tuple(tf.cast(context[key], tf.int32) for key in (schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH))
  return encoded, tf.cast(context[schema.LABEL_INDEX], tf.int32), context[schema.MEDIA_ID], frame_size


def _record_check(condition, problem: str, media_id, path) -> tf.Operation:
  message = tf.strings.join([_RECORD_ERROR_MARK, path, ': video ', media_id, ': ', problem])
  return tf.debugging.Assert(condition, [message])


def check_record(encoded: Dict[str, tf.Tensor], label, media_id, path,
                 data_config: d3d_config.DataConfig) -> Tuple[tf.Tensor, tf.Tensor]:
  """(frames in the video, label) once the record is checked: frames in every modality, as many of each, and a label
  within `[0, data.num_classes)` (when the class count is known)."""
  lengths = {name: tf.shape(frames)[0] for name, frames in encoded.items()}
  checks = [_record_check(length > 0, f'no {network_inputs.MODALITIES[name].feature_key} frames (records converted '
                          f'without {name}?)', media_id, path) for name, length in lengths.items()]
  first, *others = lengths.values()
  checks += [_record_check(tf.equal(length, first), 'RGB and flow frame counts differ', media_id, path)
             for length in others]
  if data_config.num_classes:
    label_map_name = data_config.label_map or f'data.num_classes={data_config.num_classes}'
    checks.append(_record_check(
        tf.logical_and(label >= 0, label < data_config.num_classes),
        tf.strings.join(['label ', tf.strings.as_string(label),
                         f' is outside the {data_config.num_classes} classes of {label_map_name}']),
        media_id, path))
  with tf.control_dependencies(checks):
    return tf.identity(first), tf.identity(label)


def record_error(error: tf.errors.OpError) -> Optional[RecordError]:
  """The RecordError that a failed record check raised inside TensorFlow, or None for other errors."""
  message = error.message
  start = message.find(_RECORD_ERROR_MARK)
  if start < 0:
    return None
  message = message[start + len(_RECORD_ERROR_MARK):]
  return RecordError(message.split('\n')[0].rstrip('] '))


def gather_and_decode(encoded, indices, channels=3):
  """Gathers the encoded images at `indices` (any shape, flattened) and decodes only those: uint8 `[N, H, W, C]`."""
  return video_ops.decode_frames(tf.gather(encoded, tf.reshape(indices, [-1])), channels=channels)


def _augment(encoded, modality, window, frame_size, flip, data_config, pixel_range):
  """Decodes the window of each frame, (maybe) flips it, scales it and resizes it to the crop size: one modality,
  parameters shared by all.

  Work on uint8 moves a quarter of the bytes of float32's, so the flow's unused third channel goes while decoding and
  the flip happens before the conversion to float (the flow's x sign changes there, in the same pass).
  """
  frames = video_ops.decode_window(encoded, window, frame_size, channels=modality.channels)
  frames = tf.cond(flip, lambda: video_ops.horizontal_flip(frames), lambda: frames)
  clip = video_ops.normalize_frames(frames, modality.is_flow, d3d_config.PIXEL_RANGES[pixel_range], mirrored=flip)
  size = data_config.crop_size
  clip = video_ops.resize(clip, size, size, is_flow=modality.is_flow)
  return tf.ensure_shape(clip, [data_config.num_frames, size, size, modality.channels])


def _uint8_clip(encoded, window, frame_size, data_config):
  """Decodes the window of each frame and resizes it to the crop size, in uint8 levels: the clip that
  `training_clips.to_network_inputs` flips and converts on the accelerator. All 3 channels of the stored images are
  kept (a flow's unused third one goes on the accelerator): dropping a channel is a strided copy that costs a flow
  clip about a fifth of its decoding time on the CPU (BUILD_NOTES)."""
  size = data_config.crop_size
  frames = video_ops.decode_window(encoded, window, frame_size)
  return tf.ensure_shape(video_ops.resize_levels(frames, size), [data_config.num_frames, size, size, 3])


def decode_train_example(serialized, path, seed, data_config: d3d_config.DataConfig, modalities: Sequence[str],
                         pixel_range: str):
  """One record of file `path` -> (features, int32 label): random clip, scale, crop, flip.

  Features are {modality: float32 `[T, S, S, C]`}, or with `data.convert_on_accelerator` the uint8 clips with their
  `training_clips` parameters (the flip not yet applied). `seed` (int `[2]`) drives every random choice, so one
  record and seed always give the same clip. The crop window comes from the frame size in the record's context (the
  writer stores RGB and flow at that one size), so that only the window is decoded.
  """
  encoded, label, media_id, (height, width) = parse_example(serialized, modalities)
  num_video_frames, label = check_record(encoded, label, media_id, path, data_config)
  size_check = _record_check(tf.logical_and(height > 0, width > 0),
                             f'no {schema.IMAGE_HEIGHT} and {schema.IMAGE_WIDTH} in its context', media_id, path)
  with tf.control_dependencies([size_check]):
    height, width = tf.identity(height), tf.identity(width)
  start_seed, window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))

  start = video_ops.random_clip_start(num_video_frames, data_config.num_frames, data_config.stride, start_seed)
  indices = video_ops.sample_clip_indices(num_video_frames, data_config.num_frames, data_config.stride, start)
  window = video_ops.random_scale_jitter_window(height, width, data_config.crop_size, *data_config.train_resize_range,
                                                window_seed)
  flip = tf.logical_and(data_config.random_flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
  frames = {name: tf.gather(encoded[name], indices) for name in modalities}
  if not data_config.convert_on_accelerator:
    features = {name: _augment(frames[name], network_inputs.MODALITIES[name], window, (height, width), flip,
                               data_config, pixel_range)
                for name in modalities}
    return features, label
  features = {name: _uint8_clip(frames[name], window, (height, width), data_config) for name in modalities}
  features[training_clips.MIRRORED] = tf.cast(flip, tf.uint8)
  if any(network_inputs.MODALITIES[name].is_flow for name in modalities):
    features[training_clips.FLOW_SCALE] = tf.cast(data_config.crop_size, tf.float32) / tf.cast(window[2], tf.float32)
  return features, label


def eval_clip_indices(num_video_frames, data_config: d3d_config.DataConfig) -> tf.Tensor:
  """Frame indices `[num_eval_clips, num_frames]` of evaluation's clips: evenly spaced in time (the centre clip when
  there is one), looping videos shorter than a clip."""
  starts = video_ops.evenly_spaced_clip_starts(num_video_frames, data_config.num_frames, data_config.stride,
                                               data_config.num_eval_clips)
  return video_ops.sample_clip_indices(num_video_frames, data_config.num_frames, data_config.stride, starts)


def eval_views(frames, indices, data_config: d3d_config.DataConfig, modality: network_inputs.Modality,
               pixel_range: str) -> tf.Tensor:
  """A video's evaluation views, float32 `[V, T, S, S, C]`, V = clips x crops: the one evaluation view, of the
  evaluation pipeline and of the serving graph, so that a served network sees what it was evaluated on.

  `frames` is the whole video, encoded images `[N]` or decoded uint8 `[N, H, W, 3]`. Only the frames at `indices`
  (from `eval_clip_indices`) are decoded, scaled and resized, each once even where clips overlap. Views are ordered
  clip-major: (clip 0, crop 0), (clip 0, crop 1), ... Crops are evenly spaced along the long side of the frame after
  its short side is resized to `eval_resize`; one crop is the centre crop.
  """
  num_clips, num_crops = data_config.num_eval_clips, data_config.num_eval_crops
  num_frames, size, channels = data_config.num_frames, data_config.crop_size, modality.channels
  distinct, positions = tf.unique(tf.reshape(indices, [-1]))
  if frames.dtype == tf.string:
    sampled = gather_and_decode(frames, distinct)
  else:
    sampled = tf.gather(frames, distinct)
  clips = video_ops.normalize_frames(sampled, modality.is_flow, d3d_config.PIXEL_RANGES[pixel_range])
  clips = video_ops.resize_short_side(clips, data_config.eval_resize, modality.is_flow)
  offsets_y, offsets_x = video_ops.evenly_spaced_crop_offsets(tf.shape(clips)[1], tf.shape(clips)[2], size, num_crops)
  crops = tf.stack([video_ops.crop(clips, offsets_y[i], offsets_x[i], size) for i in range(num_crops)], axis=1)
  crops = tf.reshape(tf.gather(crops, positions), [num_clips, num_frames, num_crops, size, size, channels])
  views = tf.reshape(tf.transpose(crops, [0, 2, 1, 3, 4, 5]), [num_clips * num_crops, num_frames, size, size, channels])
  return tf.ensure_shape(views, [num_clips * num_crops, num_frames, size, size, channels])


def decode_eval_example(serialized, path, data_config: d3d_config.DataConfig, modalities: Sequence[str],
                        pixel_range: str):
  """One record of file `path` -> ({modality: float32 `[V, T, S, S, C]`}, int32 label): its `eval_views`, the same
  clips for every modality."""
  encoded, label, media_id, _ = parse_example(serialized, modalities)
  num_video_frames, label = check_record(encoded, label, media_id, path, data_config)
  indices = eval_clip_indices(num_video_frames, data_config)
  features = {name: eval_views(encoded[name], indices, data_config, network_inputs.MODALITIES[name], pixel_range)
              for name in modalities}
  return features, label


def check_config(data_config: d3d_config.DataConfig, modalities: Sequence[str], training: bool) -> None:
  """Raises ConfigError naming the setting that cannot give a batch of clips (ValueError: bad `modalities`)."""
  unknown = [name for name in modalities if name not in network_inputs.MODALITIES]
  if not modalities or unknown or len(set(modalities)) != len(modalities):
    raise ValueError(f'modalities must be distinct names from {sorted(network_inputs.MODALITIES)}, got '
                     f'{tuple(modalities)}')
  data_config.check_resize(training)
  if data_config.num_eval_clips < 1 or data_config.num_eval_crops < 1:
    raise d3d_config.ConfigError('data.num_eval_clips and data.num_eval_crops must be positive')


def glob_files(pattern: str) -> List[str]:
  """Sorted files of a comma-separated list of globs."""
  return sorted({path for glob in pattern.split(',') if glob.strip() for path in tf.io.gfile.glob(glob.strip())})


def list_shard_files(pattern: str, setting: str, input_context: Optional[tf.distribute.InputContext]):
  """Sorted files of a comma-separated list of globs; this input pipeline's share of them under tf.distribute."""
  files = glob_files(pattern)
  if not files:
    raise d3d_config.ConfigError(f'data.{setting}={pattern!r} matches no files')
  if input_context is None or input_context.num_input_pipelines == 1:
    return files
  if len(files) < input_context.num_input_pipelines:
    raise d3d_config.ConfigError(f'data.{setting}={pattern!r} matches {len(files)} files, fewer than the '
                     f'{input_context.num_input_pipelines} input pipelines: write at least that many shards')
  return files[input_context.input_pipeline_id::input_context.num_input_pipelines]


def check_first_record(pattern: str, setting: str, modalities: Sequence[str]) -> None:
  """Raises RecordError when the first record of `pattern` lacks frames of a modality, so that records converted
  without flow (say) fail in seconds, before a run writes anything, rather than at its first batch."""
  for path in list_shard_files(pattern, setting, None):
    try:
      first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.DataLossError as error:
      raise RecordError(f'{path}: not a readable TFRecord file ({error.message})') from None
    if first is None:
      continue  # an empty shard: the next one tells
    feature_lists = tf.train.SequenceExample.FromString(first.numpy()).feature_lists.feature_list
    keys = {name: network_inputs.MODALITIES[name].feature_key for name in modalities}
    missing = [name for name in modalities if not feature_lists[keys[name]].feature]
    if missing:
      raise RecordError(f'{path}: its records hold no {" or ".join(missing)} frames '
                        f'({", ".join(keys[name] for name in missing)}), which this run reads; '
                        'were they converted without optical flow (--flow_backend=none)?')
    return


def find_corrupt_record(patterns: Sequence[str]) -> Optional[str]:
  """A description of the first unreadable record in the files of `patterns` (reading every record), or None.

  TensorFlow's error about a corrupt record does not name its file; this finds it.
  """
  for path in sorted({path for pattern in patterns for path in glob_files(pattern)}):
    num_read = 0
    try:
      for _ in tf.data.TFRecordDataset(path):
        num_read += 1
    except tf.errors.DataLossError as error:
      return f'{path}: record {num_read} is corrupt or truncated ({error.message})'
  return None


def _batch_size(batch_size: int, input_context: Optional[tf.distribute.InputContext]) -> int:
  """This input pipeline's batch: the global batch split evenly over the replicas."""
  if input_context is None:
    return batch_size
  if batch_size % input_context.num_replicas_in_sync:
    raise d3d_config.ConfigError(f'a batch of {batch_size} clips does not split evenly over '
                                 f'{input_context.num_replicas_in_sync} replicas')
  return input_context.get_per_replica_batch_size(batch_size)


def _records_with_path(path) -> tf.data.Dataset:
  """(serialized record, its file) of one TFRecord file: the file names a bad record in error messages."""
  return tf.data.TFRecordDataset(path).map(lambda record: (record, path))


def build_train_dataset(data_config: d3d_config.DataConfig,
                        modalities: Sequence[str] = ('rgb', 'flow'),
                        input_context: Optional[tf.distribute.InputContext] = None,
                        pixel_range: str = d3d_config.DEFAULT_PIXEL_RANGE) -> tf.data.Dataset:
  """Endless, shuffled batches ({modality: float32 `[B, T, S, S, C]`}, int32 labels `[B]`) for training; with
  `data.convert_on_accelerator`, uint8 clips with their flips and flow scales, which `training_clips` converts.

  B is `global_batch_size`, or the per-replica batch when `input_context` is given (then each input pipeline reads
  its own subset of the shards). Float32 RGB is scaled to the network's `pixel_range` (`model.pixel_range`; uint8
  RGB is, by the training step). With `data.tf_data_service`, the batches are made by that service's workers
  (`data_service`).
  """
  modalities = tuple(modalities)
  check_config(data_config, modalities, training=True)
  files = list_shard_files(data_config.train_pattern, 'train_pattern', input_context)
  seed = data_config.seed + (input_context.input_pipeline_id if input_context else 0)  # workers augment differently

  records = (tf.data.Dataset.from_tensor_slices(files)
             .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
             .repeat()
             .interleave(_records_with_path, cycle_length=min(len(files), MAX_INTERLEAVED_FILES),
                         num_parallel_calls=AUTOTUNE, deterministic=data_config.deterministic)
             .shuffle(data_config.shuffle_buffer, seed=seed))
  example_seeds = tf.data.Dataset.random(seed=seed).batch(2)

  def decode(record, example_seed):
    serialized, path = record
    if data_config.tf_data_service:  # each service worker draws the same seeds: its file sets a clip's apart
      example_seed = tf.random.experimental.stateless_fold_in(example_seed, tf.strings.to_hash_bucket_fast(path, 2**31))
    return decode_train_example(serialized, path, example_seed, data_config, modalities, pixel_range)

  dataset = (tf.data.Dataset.zip((records, example_seeds))
             .map(decode, num_parallel_calls=AUTOTUNE, deterministic=data_config.deterministic)
             .batch(_batch_size(data_config.global_batch_size, input_context), drop_remainder=True))
  if data_config.tf_data_service:
    dataset = data_service.distribute(dataset, data_config.tf_data_service)
  dataset = dataset.prefetch(AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = data_config.deterministic
  return dataset.with_options(options)


def build_eval_dataset(data_config: d3d_config.DataConfig,
                       modalities: Sequence[str] = ('rgb',),
                       input_context: Optional[tf.distribute.InputContext] = None,
                       pixel_range: str = d3d_config.DEFAULT_PIXEL_RANGE) -> tf.data.Dataset:
  """One pass, in file order, of ({modality: float32 `[B, V, T, S, S, C]`}, int32 labels `[B]`); last batch kept.

  V = num_eval_clips x num_eval_crops views per video, to be averaged into one video-level prediction. RGB is
  scaled to the network's `pixel_range`.
  """
  modalities = tuple(modalities)
  check_config(data_config, modalities, training=False)
  files = list_shard_files(data_config.eval_pattern, 'eval_pattern', input_context)
  return (tf.data.Dataset.from_tensor_slices(files)
          .flat_map(_records_with_path)
          .map(lambda record, path: decode_eval_example(record, path, data_config, modalities, pixel_range),
               num_parallel_calls=AUTOTUNE)
          .batch(_batch_size(data_config.eval_batch_size, input_context), drop_remainder=False)
          .prefetch(AUTOTUNE))
