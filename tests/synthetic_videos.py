"""Test videos written with OpenCV: real textures moving by a known amount, and broken files of each kind."""

import pathlib

import cv2
import numpy as np
import skimage.data


def write_video(path: pathlib.Path, frames_rgb, fps: float = 25.0, fourcc: str = 'FFV1') -> pathlib.Path:
  """Writes RGB frames; FFV1 is lossless, so decoded frames equal the written ones exactly."""
  height, width = frames_rgb[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
  assert writer.isOpened(), f'OpenCV cannot write {fourcc} to {path}'
  for frame in frames_rgb:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  return path


def translating_texture(num_frames: int, height: int, width: int, dx: int, dy: int) -> np.ndarray:
  """Frames of a real photograph (skimage's astronaut) whose content moves by (dx, dy) pixels per frame."""
  image = skimage.data.astronaut()
  top, left = 150, 150
  # Moving the window by (-dx, -dy) moves the content by (+dx, +dy).
  return np.stack([image[top - k * dy:top - k * dy + height, left - k * dx:left - k * dx + width]
                   for k in range(num_frames)])


def numbered_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
  """Frames whose mean brightness encodes their index (10 * k + 5), to check which source frame was picked."""
  return np.stack([np.full((height, width, 3), 10 * k + 5, np.uint8) for k in range(num_frames)])


def write_bad_inputs(folder: pathlib.Path, real_mp4: pathlib.Path) -> dict:
  """One file of each kind of bad input; returns {name: (path, expected words in the reason)}."""
  folder.mkdir(parents=True, exist_ok=True)
  data = real_mp4.read_bytes()
  rng = np.random.default_rng(0)
  files = {
      'missing': (folder / 'missing.mp4', 'missing'),
      'empty': (folder / 'empty.mp4', 'empty file'),
      'truncated': (folder / 'truncated.mp4', 'truncated'),
      'random': (folder / 'random.mp4', 'not a video'),
      'text': (folder / 'text.mp4', 'not a video'),
      'one_frame': (folder / 'one_frame.avi', 'only 1 frame'),
  }
  files['empty'][0].write_bytes(b'')
  files['truncated'][0].write_bytes(data[:len(data) // 2])
  files['random'][0].write_bytes(rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
  files['text'][0].write_text('This is a text file, not a video.\n' * 100)
  write_video(files['one_frame'][0], numbered_frames(1))
  return files
