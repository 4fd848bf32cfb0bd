"""Decodes a video with OpenCV into RGB frames at a fixed frame rate and size, or says clearly why it cannot.

The converter's reader and the serving client's: one reader, so that served frames are the frames trained on.

Frames are resampled by timestamp: output frame k has time `start + k / fps` and shows the last decoded frame at or
before that time, so any source rate (24, 29.97, 30, 60 fps) maps onto the same grid. Frames are resized so the short
side is `short_side` after resampling, so no time is spent on frames that are dropped.
"""

import contextlib
import dataclasses
import math
import os
import tempfile
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import tensorflow as tf

from d3d_core import cli

# A decoded frame counts as "at" an output time when it is at most this late (container timestamps jitter by ~1 ms).
_TIMESTAMP_TOLERANCE_US = 1000
# At the end of the stream, fewer frames than this fraction of the header's count means the file was cut short.
_TRUNCATION_FRACTION = 0.9
_MAX_PLAUSIBLE_FPS = 1000.0

# First bytes of common video containers: a file that starts like one but does not open is damaged, not foreign.
_CONTAINER_SIGNATURES = (
    (4, b'ftyp', 'MP4/MOV'),
    (0, b'RIFF', 'AVI'),
    (0, b'\x1aE\xdf\xa3', 'Matroska/WebM'),
    (0, b'FLV', 'FLV'),
    (0, b'\x00\x00\x01\xba', 'MPEG program stream'),
    (0, b'OggS', 'Ogg'),
    (0, b'0&\xb2u', 'ASF/WMV'),
)


class VideoDecodeError(Exception):
  """A video that cannot be turned into at least two frames; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """Output frame rate and size of decoded videos."""
  fps: float = 25.0
  short_side: int = 256  # 0 keeps the decoded size
  max_frames: int = 0  # 0: no cap; otherwise keep only the first max_frames output frames (quick runs)

  def __post_init__(self):
    if not 0 < self.fps <= _MAX_PLAUSIBLE_FPS:
      raise ValueError(f'fps must be in (0, {_MAX_PLAUSIBLE_FPS:g}], got {self.fps}')
    if self.short_side < 0 or self.max_frames < 0:
      raise ValueError(f'short_side and max_frames must be >= 0, got {self.short_side} and {self.max_frames}')


@dataclasses.dataclass
class DecodedVideo:
  frames: np.ndarray  # uint8 [T, H, W, 3], RGB
  timestamps_us: np.ndarray  # int64 [T], output times in microseconds


def resized_shape(height: int, width: int, short_side: int) -> Tuple[int, int]:
  """(height, width) with the short side scaled to `short_side` and the aspect ratio kept; 0 keeps the size."""
  if short_side <= 0:
    return height, width
  scale = short_side / min(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_rgb(bgr: np.ndarray, short_side: int) -> np.ndarray:
  height, width = bgr.shape[:2]
  new_height, new_width = resized_shape(height, width, short_side)
  if (new_height, new_width) != (height, width):
    shrinking = new_height * new_width < height * width
    bgr = cv2.resize(bgr, (new_width, new_height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _file_head(path: str, local_path: str) -> bytes:
  """The first bytes of the file, which name its container; an unreadable file is a VideoDecodeError here, before
  OpenCV tries (and logs) every decoder on it."""
  try:
    with open(local_path, 'rb') as f:
      return f.read(16)
  except OSError as error:
    raise VideoDecodeError(f'{path}: cannot be read ({error.strerror})') from None


def _describe_unopenable(path: str, head: bytes) -> str:
  for offset, signature, container in _CONTAINER_SIGNATURES:
    if head[offset:offset + len(signature)] == signature:
      return f'{path}: corrupt or truncated {container} file (OpenCV/FFmpeg cannot open it)'
  return f'{path}: not a video (OpenCV/FFmpeg cannot open it)'


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
  """OpenCV reads local files only: remote paths (gs://...) are copied to a temporary file first."""
  if '://' not in path:
    yield path
    return
  with tempfile.TemporaryDirectory() as folder:
    local_path = os.path.join(folder, os.path.basename(path))
    try:
      tf.io.gfile.copy(path, local_path)
    except tf.errors.OpError as error:
      raise VideoDecodeError(f'{path}: cannot be read ({cli.error_reason(error)})') from None
    yield local_path


def _decoded_frames(capture: cv2.VideoCapture, path: str) -> Iterator[Tuple[int, np.ndarray]]:
  """Yields (timestamp in microseconds, BGR frame); repairs missing or non-increasing timestamps from the fps."""
  fps = capture.get(cv2.CAP_PROP_FPS)
  period_us = 1e6 / fps if math.isfinite(fps) and 0 < fps <= _MAX_PLAUSIBLE_FPS else None
  previous_us = None
  while True:
    ok, frame = capture.read()
    if not ok or frame is None:
      return
    timestamp_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
    timestamp_us = round(timestamp_ms * 1000) if math.isfinite(timestamp_ms) else -1
    if previous_us is None:
      timestamp_us = max(timestamp_us, 0)
    elif timestamp_us <= previous_us:
      if period_us is None:
        raise VideoDecodeError(f'{path}: neither usable frame timestamps nor a usable frame rate ({fps})')
      timestamp_us = round(previous_us + period_us)
    previous_us = timestamp_us
    yield timestamp_us, frame


def _resample(decoded: Iterator[Tuple[int, np.ndarray]], config: DecodeConfig, start_us: int,
              end_us: Optional[int]) -> Tuple[List[np.ndarray], List[int], int, bool]:
  """Picks, for each output time, the last decoded frame at or before it (the first frame for earlier times).

  Returns the RGB frames, their output times, how many frames were decoded, and whether the stream was read to its end.
  """
  frames, times = [], []
  period_us = 1e6 / config.fps
  decoded_count = 0
  held_us, held_bgr, held_rgb = 0, None, None  # the latest decoded frame; resized only if it is used
  last_gap_us = round(period_us)

  def next_time():
    return round(start_us + len(times) * period_us)

  def finished():
    return bool(config.max_frames and len(times) >= config.max_frames) or (end_us is not None and
                                                                           next_time() >= end_us)

  def show_held_until(limit_us):
    nonlocal held_rgb
    while not finished() and next_time() < limit_us:
      if held_rgb is None:
        held_rgb = _resize_rgb(held_bgr, config.short_side)
      frames.append(held_rgb)
      times.append(next_time())

  for timestamp_us, bgr in decoded:
    decoded_count += 1
    if held_bgr is not None:
      last_gap_us = timestamp_us - held_us
      show_held_until(timestamp_us - _TIMESTAMP_TOLERANCE_US)
      if finished():
        return frames, times, decoded_count, False
    held_us, held_bgr, held_rgb = timestamp_us, bgr, None
  if held_bgr is not None:
    show_held_until(held_us + last_gap_us - _TIMESTAMP_TOLERANCE_US)  # the last frame lasts one frame period
  return frames, times, decoded_count, True


def read_video(path: str, config: DecodeConfig, start: Optional[float] = None,
               end: Optional[float] = None) -> DecodedVideo:
  """Decodes `path` (optionally only [start, end) seconds) at `config.fps` with the short side `config.short_side`.

  Raises:
    VideoDecodeError: the file is missing, unreadable, empty, not a video, corrupt, truncated, or yields fewer than
      2 frames.
  """
  if not tf.io.gfile.exists(path):
    raise VideoDecodeError(f'{path}: missing (no such file)')
  if tf.io.gfile.isdir(path):
    raise VideoDecodeError(f'{path}: is a directory, not a video file')
  if tf.io.gfile.stat(path).length == 0:
    raise VideoDecodeError(f'{path}: empty file (0 bytes)')
  start_us = round((start or 0.0) * 1e6)
  end_us = None if end is None else round(end * 1e6)
  if end_us is not None and end_us <= start_us:
    raise VideoDecodeError(f'{path}: clip end {end}s is not after its start {start}s')

  with _local_copy(path) as local_path:
    head = _file_head(path, local_path)
    capture = cv2.VideoCapture(local_path)
    try:
      if not capture.isOpened():
        raise VideoDecodeError(_describe_unopenable(path, head))
      declared_frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
      decoded = _decoded_frames(capture, path)
      frames, times, decoded_count, reached_end = _resample(decoded, config, start_us, end_us)
    finally:
      capture.release()

  if reached_end and decoded_count == 0:
    raise VideoDecodeError(f'{path}: no decodable frames (corrupt video stream)')
  if (reached_end and math.isfinite(declared_frames) and declared_frames > 0 and
      decoded_count < _TRUNCATION_FRACTION * declared_frames):
    raise VideoDecodeError(f'{path}: truncated or corrupt: decoded {decoded_count} of the '
                           f'{int(declared_frames)} frames its header declares')
  if len(frames) < 2:
    raise VideoDecodeError(f'{path}: only {len(frames)} frame(s) at {config.fps:g} fps in the requested range; '
                           'at least 2 are needed for flow')
  return DecodedVideo(frames=np.stack(frames), timestamps_us=np.asarray(times, np.int64))
