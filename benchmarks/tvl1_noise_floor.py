r"""OpenCV's TV-L1 against itself, given frames a thousandth of a grey level apart: the floor under flow agreement.

  python -m benchmarks.tvl1_noise_floor [--frames_per_video=80]

TV-L1 is iterative and nonconvex: where objects move far between two frames, the coarse-to-fine schedule can settle
differently for a tiny change of its input, so no second implementation can agree with OpenCV better than OpenCV
agrees with itself there. For each video of `convert_benchmark` (`benchmarks/mixed_size_videos.py`, the same frames:
25 fps, short side 256, grayscale), OpenCV's DualTVL1 at its default parameters computes each frame pair twice: from
the uint8 frames, and from the same frames as float (grey level / 255, which OpenCV scales back) with the centre pixel
of each pair's second frame raised by 0.001 grey level. Both flows are stored as the converter stores them (+-20 px
onto uint8) and compared as `convert_benchmark` compares the auto backend's flow with OpenCV's. One process a video.
"""

# First, before anything imports TensorFlow (the record settings do; also in the worker processes, which 'spawn' starts
# from this module as __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import multiprocessing
import os
import pathlib
import tempfile

import cv2
import numpy as np
from absl import app
from absl import flags

from benchmarks import mixed_size_videos
from d3d_core import flow_quantization
from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import sequence_example

_PERTURBATION = 0.001  # grey levels, on one pixel

flags.DEFINE_integer('frames_per_video', 80, 'Frames per video (the first ones at 25 fps), as convert_benchmark.')
FLAGS = flags.FLAGS


def _stored_flows(first_frames, second_frames) -> np.ndarray:
  """OpenCV's flow of each pair, quantised as the converter stores it: uint8 `[pairs, H, W, 3]`."""
  tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(*tvl1_params.Tvl1Params().opencv_args())
  flows = [tvl1.calc(first, second, None) for first, second in zip(first_frames, second_frames)]
  return flow_quantization.quantize_flow(np.stack(flows), sequence_example.EncodingConfig().flow_bound)


def compare(path: pathlib.Path, num_frames: int) -> str:
  """One video's agreement row: OpenCV on its frames against OpenCV on the perturbed float frames."""
  cv2.setNumThreads(1)
  frames = video_reader.read_video(str(path), video_reader.DecodeConfig(max_frames=num_frames)).frames
  gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])
  as_float = gray.astype(np.float32) / 255.0
  perturbed = as_float[1:].copy()
  perturbed[:, gray.shape[1] // 2, gray.shape[2] // 2] += _PERTURBATION / 255.0
  reference = _stored_flows(gray[:-1], gray[1:])
  return mixed_size_videos.agreement_row(path.stem, reference, _stored_flows(as_float[:-1], perturbed),
                                         sequence_example.EncodingConfig().flow_bound)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with tempfile.TemporaryDirectory(prefix='tvl1_noise_floor_') as work_dir:
    videos = mixed_size_videos.video_paths(pathlib.Path(work_dir), FLAGS.frames_per_video)
    with multiprocessing.get_context('spawn').Pool(min(len(videos), os.cpu_count())) as pool:
      rows = pool.starmap(compare, [(video, FLAGS.frames_per_video) for video in videos])
  print(f'OpenCV {cv2.__version__} against itself, one pixel of each second frame {_PERTURBATION} grey level up')
  print(mixed_size_videos.AGREEMENT_HEADER)
  print('\n'.join(rows))


if __name__ == '__main__':
  app.run(main)
