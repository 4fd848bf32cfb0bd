"""What the D3D student saves at inference: a clip through its SavedModel against the two-stream pipeline, which must
first compute the clip's TV-L1 flow."""

import dataclasses
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from d3d_core import flow_quantization
from d3d_core import video_reader
from examples.motion_demo import config as demo_config
from official_d3d import benchmarking
from official_d3d import evaluation
from official_d3d import export_saved_model
from official_d3d.dataloaders import video_input
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests


def sampled_flow(backend: flow_backends.FlowBackend, frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
  """Flow `[T, H, W, 2]` of a clip at the frame `indices` a network samples, zero at the frames it skips.

  Frame i's flow is the motion from i to i + 1, and the last frame's repeats the one before, as in the records: a
  two-stream pipeline at stride s computes one pair per sampled frame, not every pair of the span.
  """
  flow = np.zeros(frames.shape[:3] + (2,), np.float32)
  pairs = {}
  for index in indices:
    start = min(index, len(frames) - 2)
    if start not in pairs:
      pairs[start] = backend.pair_flows(frames[start:start + 2])[0]
    flow[index] = pairs[start]
  return flow


def _serving_function(saved_model_dir: str):
  return tf.saved_model.load(saved_model_dir).signatures[export_saved_model.VIDEO_SIGNATURE]


def measure_latency(config: demo_config.DemoConfig, paths: demo_config.DemoPaths, exported: Dict[str, str]) -> dict:
  """Median wall time per clip, decoded frames in, class probabilities out, batch of one, on this machine.

  D3D: the student's SavedModel on the RGB frames. Two-stream: OpenCV TV-L1 flow of the frames the flow network
  samples (quantised as the converter stores it), the flow teacher's SavedModel on it, the RGB baseline's on the
  frames, and the fusion of the two. TV-L1 alone is timed too, as the share of two-stream that D3D does without.
  """
  conversion = demo_config.conversion_config(config, paths, 'test')
  data = demo_config.experiment_config(config, paths, 'flow_teacher').data  # the same clips for all three
  test_manifest = manifests.read_manifest(conversion.source)
  # One clip of the network's length per video, as the serving graph would sample it: one to warm up, then the timed.
  span = data.num_frames * data.stride
  clips = [video_reader.read_video(entry.path, conversion.decode).frames[:span] for entry in test_manifest.entries]
  clips = [clips[i] for i in np.linspace(0, len(clips) - 1, config.latency_clips + 1).astype(int)]
  d3d = _serving_function(exported['d3d_student'])
  rgb = _serving_function(exported['rgb_baseline'])
  flow_network = _serving_function(exported['flow_teacher'])
  tvl1 = flow_backends.create_backend(dataclasses.replace(conversion.flow, backend='opencv'))
  sampled = video_input.eval_clip_indices(span, data)[0].numpy()  # what the served flow network reads

  def flow_images(frames):
    return flow_quantization.quantize_flow(sampled_flow(tvl1, frames, sampled), conversion.encoding.flow_bound)

  def two_stream(frames):
    flow_probabilities = flow_network(flow=tf.constant(flow_images(frames)[None]))['probabilities'].numpy()
    rgb_probabilities = rgb(video=tf.constant(frames[None]))['probabilities'].numpy()
    return evaluation.fuse_logits([rgb_probabilities, flow_probabilities], [1.0, 1.0])

  timings = benchmarking.time_calls(
      {'d3d': lambda frames: d3d(video=tf.constant(frames[None]))['probabilities'].numpy(),
       'two_stream': two_stream, 'tvl1_flow': flow_images}, clips)
  measured = {f'{name}_ms_per_clip': round(timing.median_ms, 2) for name, timing in timings.items()}
  measured.update({f'{name}_ms_spread': round(timing.spread_ms, 2) for name, timing in timings.items()})
  measured.update(
      clips_timed=config.latency_clips, frames_per_clip=data.num_frames, stride=data.stride,
      frame_size=[config.dataset.width, config.dataset.height], cpu_cores=convert_lib.resolve_num_workers(0),
      gpu=bool(tf.config.list_logical_devices('GPU')),
      two_stream_over_d3d=round(measured['two_stream_ms_per_clip'] / measured['d3d_ms_per_clip'], 2))
  return measured
