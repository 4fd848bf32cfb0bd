"""Tiny real TFRecords for training tests: short videos cut from the bikes clip, with Farneback flow, 3 classes."""

import os
import pathlib

import tensorflow as tf

import real_clips
from d3d_core import label_map
from official_d3d.configs import d3d_config
from tfrecord_tools import flow_backends
from tfrecord_tools import sequence_example

HEIGHT, WIDTH = 40, 48
NUM_CLASSES = 3
FRAMES_PER_VIDEO = 10
CLASS_NAMES = ('left_bikes', 'middle_bikes', 'right_bikes')


def write_records(root, video: pathlib.Path, num_train_shards: int = 2, with_flow: bool = True):
  """Train shards (2 videos per class) and an eval shard (1 per class) of consecutive real segments, + label map.

  Returns {'train': glob, 'eval': glob, 'label_map': path}. A video's class is its segment index modulo 3.
  `with_flow=False` writes RGB-only records, as the converter's `--flow_backend=none`.
  """
  root = str(root)
  os.makedirs(root, exist_ok=True)
  num_videos = 3 * NUM_CLASSES
  frames = real_clips.read_frames(video, num_videos * FRAMES_PER_VIDEO, WIDTH, HEIGHT)
  examples = []
  for index in range(num_videos):
    clip = frames[index * FRAMES_PER_VIDEO:(index + 1) * FRAMES_PER_VIDEO]
    label = index % NUM_CLASSES
    examples.append(sequence_example.build_sequence_example(
        media_id=f'bikes_{index}', label_index=label, label_string=CLASS_NAMES[label], frames=clip,
        timestamps_us=[40000 * t for t in range(len(clip))], frame_rate=25.0,
        flow=flow_backends.OpenCVFarneback().video_flow(clip) if with_flow else None))
  train_examples, eval_examples = examples[:2 * NUM_CLASSES], examples[2 * NUM_CLASSES:]
  shards = {f'train-{i:05d}.tfrecord': train_examples[i::num_train_shards] for i in range(num_train_shards)}
  shards['eval-00000.tfrecord'] = eval_examples
  for name, shard in shards.items():
    with tf.io.TFRecordWriter(os.path.join(root, name)) as writer:
      for example in shard:
        writer.write(example.SerializeToString())
  label_map.write_label_map(CLASS_NAMES, os.path.join(root, label_map.FILENAME))
  return {'train': os.path.join(root, 'train-*'), 'eval': os.path.join(root, 'eval-*'),
          'label_map': os.path.join(root, label_map.FILENAME)}


def tiny_config(records, model_dir, stream='flow', **train_overrides) -> d3d_config.ExperimentConfig:
  """A depth-0.1, 4-frame, 32-pixel experiment on `records` that trains a few steps."""
  train = dict(learning_rate=0.05, schedule='constant', train_steps=4, steps_per_loop=2, jit_compile=False)
  train.update(train_overrides)
  return d3d_config.ExperimentConfig(
      stream=stream, model_dir=str(model_dir),
      data=d3d_config.DataConfig(train_pattern=records['train'], eval_pattern=records['eval'],
                                 label_map=records['label_map'], num_frames=4, stride=2, crop_size=32,
                                 train_resize_range=(HEIGHT, WIDTH), eval_resize=HEIGHT, global_batch_size=2,
                                 eval_batch_size=2, num_eval_clips=2, num_eval_crops=2, shuffle_buffer=4),
      model=d3d_config.ModelConfig(depth_multiplier=0.1, min_depth=8, dropout_rate=0.0),
      train=d3d_config.TrainConfig(**train))
