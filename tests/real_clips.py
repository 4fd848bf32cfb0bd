"""Small network inputs cut from a real video: RGB and optical-flow clips in [-1, 1], shaped for S3D-G."""

import pathlib

import cv2
import numpy as np

from tfrecord_tools import flow_backends

FLOW_LIMIT = 20.0  # pixels, as the records store it


def read_frames(video: pathlib.Path, num_frames: int, width: int, height: int) -> np.ndarray:
  """The first `num_frames` frames resized to width x height: RGB uint8 [num_frames, height, width, 3]."""
  capture = cv2.VideoCapture(str(video))
  frames = []
  while len(frames) < num_frames:
    ok, frame = capture.read()
    if not ok:
      raise ValueError(f'{video} has fewer than {num_frames} frames')
    frames.append(cv2.cvtColor(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


def rgb_clip(video: pathlib.Path, num_frames: int, size: int, batch: int = 1) -> np.ndarray:
  """[batch, num_frames, size, size, 3] float32; batch element i starts i frames later."""
  frames = read_frames(video, num_frames + batch - 1, size, size).astype(np.float32) / 127.5 - 1.0
  return np.stack([frames[i:i + num_frames] for i in range(batch)])


def flow_clip(video: pathlib.Path, num_frames: int, size: int, batch: int = 1) -> np.ndarray:
  """[batch, num_frames, size, size, 2] float32: Farneback flow between consecutive frames, +-20 px -> [-1, 1];
  batch element i starts i frames later."""
  flows = flow_backends.OpenCVFarneback().pair_flows(read_frames(video, num_frames + batch, size, size))
  flows = (np.clip(flows, -FLOW_LIMIT, FLOW_LIMIT) / FLOW_LIMIT).astype(np.float32)
  return np.stack([flows[i:i + num_frames] for i in range(batch)])
