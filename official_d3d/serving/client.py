r"""Predicts the action in a video file with an exported D3D model: over TF Serving's REST or gRPC API, or locally.

  python -m official_d3d.serving.client --video=clip.mp4 --server=localhost:8501 --model_name=d3d --protocol=rest
  python -m official_d3d.serving.client --video=clip.mp4 --server=localhost:8500 --model_name=d3d --protocol=grpc
  python -m official_d3d.serving.client --video=clip.mp4 --saved_model=/tmp/serving/d3d/1

The video is read with OpenCV, resampled to 25 fps and resized to a short side of 256 as `tfrecord_tools` stores
training videos; its centre `--num_frames` frames are JPEG-encoded and sent to the `serve_jpeg` signature, which
samples, crops and normalises the model's clip from them as evaluation does. Send at least the model's clip span
(num_frames x stride of its training run); the default, 64, is the published S3D-G clip.

Building a request (`rest_request_body`, `grpc_request`) is separate from sending it (`send_rest`, `send_grpc`,
`predict_locally`), so the bodies can be checked without a server. `--saved_model` runs the gRPC request in this
process against a SavedModel version folder, with no server.
"""

import base64
import json
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app
from absl import flags
import cv2
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from official_d3d import export_saved_model

SIGNATURE = export_saved_model.JPEG_SIGNATURE
INPUT = export_saved_model.JPEG_INPUT
PROTOCOLS = ('rest', 'grpc')
REST_FORMATS = ('instances', 'inputs')  # TF Serving's row and columnar request layouts
MAX_GRPC_MESSAGE_BYTES = 256 * 1024 * 1024
_TIMESTAMP_EPSILON = 1e-6


def resample_indices(num_source_frames: int, source_fps: float, fps: float) -> np.ndarray:
  """Source frame shown at each 1/fps step: the last one at or before it. All frames if either rate is unknown."""
  if not (source_fps > 0 and fps > 0):
    return np.arange(num_source_frames)
  duration = num_source_frames / source_fps
  times = np.arange(int(np.ceil(duration * fps - _TIMESTAMP_EPSILON))) / fps
  return np.minimum(np.floor(times * source_fps + _TIMESTAMP_EPSILON).astype(np.int64), num_source_frames - 1)


def _resize_short_side(bgr: np.ndarray, short_side: int) -> np.ndarray:
  height, width = bgr.shape[:2]
  scale = short_side / min(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  if size == (width, height):
    return bgr
  return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def read_frames(path: str, num_frames: int = 64, short_side: int = 256, fps: float = 25.0) -> np.ndarray:
  """RGB uint8 `[T, H, W, 3]`: the centre `num_frames` frames (0: all) of the video at `fps` (0: its own rate),
  short side resized to `short_side` (0: as decoded)."""
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise ValueError(f'{path}: OpenCV cannot open it as a video (missing, not a video, or corrupt)')
  source_fps = capture.get(cv2.CAP_PROP_FPS)
  decoded = []
  try:
    while True:
      ok, bgr = capture.read()
      if not ok:
        break
      decoded.append(_resize_short_side(bgr, short_side) if short_side else bgr)
  finally:
    capture.release()
  if not decoded:
    raise ValueError(f'{path}: no decodable frame')
  indices = resample_indices(len(decoded), source_fps, fps)
  if num_frames:
    start = max(len(indices) - num_frames, 0) // 2
    indices = indices[start:start + num_frames]
  return np.stack([cv2.cvtColor(decoded[i], cv2.COLOR_BGR2RGB) for i in indices])


def encode_jpeg(frames: np.ndarray, quality: int = 95) -> List[bytes]:
  """RGB uint8 `[T, H, W, 3]` -> one JPEG per frame (OpenCV's encoder, as the training records use)."""
  encoded = []
  for frame in frames:
    ok, buffer = cv2.imencode('.jpg', cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
      raise ValueError(f'OpenCV could not encode a frame of shape {frame.shape} as JPEG')
    encoded.append(buffer.tobytes())
  return encoded


def rest_url(server: str, model_name: str, version: Optional[int] = None) -> str:
  """TF Serving's REST predict endpoint: `http://host:port/v1/models/NAME[/versions/N]:predict`."""
  base = server if server.startswith(('http://', 'https://')) else f'http://{server}'
  versioned = f'/versions/{version}' if version is not None else ''
  return f'{base.rstrip("/")}/v1/models/{model_name}{versioned}:predict'


def rest_request_body(videos: Sequence[Sequence[bytes]], rest_format: str = 'instances') -> Dict:
  """JSON body for `serve_jpeg`: one entry per video, each a list of `{"b64": ...}` frames (binary data in JSON).

  'instances' is the row layout, `{"instances": [{"frames": [...]}, ...]}`; 'inputs' the columnar one,
  `{"inputs": {"frames": [[...], ...]}}`.
  """
  encoded = [[{'b64': base64.b64encode(frame).decode('ascii')} for frame in video] for video in videos]
  if rest_format == 'instances':
    return {'signature_name': SIGNATURE, 'instances': [{INPUT: frames} for frames in encoded]}
  if rest_format == 'inputs':
    return {'signature_name': SIGNATURE, 'inputs': {INPUT: encoded}}
  raise ValueError(f'rest_format must be one of {REST_FORMATS}, got {rest_format!r}')


def grpc_request(videos: Sequence[Sequence[bytes]], model_name: str,
                 version: Optional[int] = None) -> predict_pb2.PredictRequest:
  """PredictRequest for `serve_jpeg`: a DT_STRING tensor `[videos, frames]` of encoded frames."""
  if len({len(video) for video in videos}) != 1:
    raise ValueError('every video of one request needs the same number of frames')
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = SIGNATURE
  if version is not None:
    request.model_spec.version.value = version
  request.inputs[INPUT].CopyFrom(
      tf.make_tensor_proto([list(video) for video in videos], dtype=tf.string, shape=[len(videos), len(videos[0])]))
  return request


def parse_rest_response(response: Mapping) -> Dict[str, np.ndarray]:
  """Outputs of a REST predict response, row (`predictions`) or columnar (`outputs`), as arrays with a batch axis."""
  if 'error' in response:
    raise RuntimeError(f'TF Serving refused the request: {response["error"]}')
  if 'predictions' in response:
    predictions = response['predictions']
    return {name: np.asarray([p[name] for p in predictions]) for name in predictions[0]}
  if 'outputs' in response:
    return {name: np.asarray(values) for name, values in response['outputs'].items()}
  raise ValueError(f'not a TF Serving predict response: keys {sorted(response)}')


def send_rest(url: str, body: Mapping, timeout: float = 60.0) -> Dict[str, np.ndarray]:
  reply = requests.post(url, data=json.dumps(body), headers={'Content-Type': 'application/json'}, timeout=timeout)
  try:
    response = reply.json()
  except ValueError as error:
    raise RuntimeError(f'{url} answered HTTP {reply.status_code} without JSON: {reply.text[:200]}') from error
  if reply.status_code != 200 and 'error' not in response:
    raise RuntimeError(f'{url} answered HTTP {reply.status_code}: {reply.text[:200]}')
  return parse_rest_response(response)


def parse_grpc_response(response: predict_pb2.PredictResponse) -> Dict[str, np.ndarray]:
  return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def send_grpc(server: str, request: predict_pb2.PredictRequest, timeout: float = 60.0) -> Dict[str, np.ndarray]:
  import grpc  # pylint: disable=g-import-not-at-top  (only the gRPC protocol needs it)
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  options = [('grpc.max_send_message_length', MAX_GRPC_MESSAGE_BYTES),
             ('grpc.max_receive_message_length', MAX_GRPC_MESSAGE_BYTES)]
  with grpc.insecure_channel(server, options=options) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return parse_grpc_response(stub.Predict(request, timeout=timeout))


def predict_locally(saved_model, request: predict_pb2.PredictRequest) -> Dict[str, np.ndarray]:
  """Runs a PredictRequest on a SavedModel (a version folder, or one `tf.saved_model.load` returned), as TF Serving
  would: the signature it names, fed with its input tensors."""
  if isinstance(saved_model, str):
    saved_model = tf.saved_model.load(saved_model)
  name = request.model_spec.signature_name or export_saved_model.VIDEO_SIGNATURE
  if name not in saved_model.signatures:
    raise ValueError(f'the SavedModel has no signature {name!r}; it has {sorted(saved_model.signatures)}')
  inputs = {key: tf.constant(tf.make_ndarray(tensor)) for key, tensor in request.inputs.items()}
  return {key: value.numpy() for key, value in saved_model.signatures[name](**inputs).items()}


def top_classes(outputs: Mapping[str, np.ndarray], top_k: int = 5, video: int = 0) -> List[Tuple[str, float]]:
  """(class name, probability) of the most probable classes of one video, best first (at most the export's k)."""
  labels = outputs['top_k_labels'][video][:top_k]
  indices = np.asarray(outputs['top_k_indices'][video][:top_k], np.int64)
  probabilities = np.asarray(outputs['probabilities'][video])[indices]
  return [(label.decode() if isinstance(label, bytes) else str(label), float(p))
          for label, p in zip(labels, probabilities)]


def define_flags() -> None:
  flags.DEFINE_string('video', None, 'Video file to classify (any format OpenCV/FFmpeg reads).')
  flags.DEFINE_string('server', None, 'TF Serving host:port (REST port 8501 or gRPC port 8500 by default).')
  flags.DEFINE_string('model_name', 'd3d', 'Model name on the server (--model_name of tensorflow_model_server).')
  flags.DEFINE_integer('model_version', None, 'Version to query; default: the one the server serves.')
  flags.DEFINE_enum('protocol', 'rest', PROTOCOLS, 'REST (/v1/models/NAME:predict) or gRPC (PredictionService).')
  flags.DEFINE_enum('rest_format', 'instances', REST_FORMATS, 'REST request layout: row or columnar.')
  flags.DEFINE_string('saved_model', None, 'Run locally on this SavedModel version folder instead of a server.')
  flags.DEFINE_integer('num_frames', 64, 'Centre frames to send (0: the whole video).')
  flags.DEFINE_integer('short_side', 256, 'Short side of the frames sent (0: as decoded).')
  flags.DEFINE_float('fps', 25.0, 'Frame rate the video is resampled to (0: its own).')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality of the frames sent.')
  flags.DEFINE_integer('top_k', 5, 'Classes to print (at most the --top_k of the export).')
  flags.DEFINE_float('timeout', 60.0, 'Seconds to wait for the server.')
  flags.mark_flag_as_required('video')
  flags.register_multi_flags_validator(
      ['server', 'saved_model'], lambda v: (v['server'] is None) != (v['saved_model'] is None),
      message='give exactly one of --server and --saved_model')


def main(argv):
  del argv  # Everything comes in through flags.
  values = flags.FLAGS
  frames = read_frames(values.video, values.num_frames, values.short_side, values.fps)
  videos = [encode_jpeg(frames, values.jpeg_quality)]
  if values.saved_model:
    target = values.saved_model
    outputs = predict_locally(values.saved_model, grpc_request(videos, values.model_name, values.model_version))
  elif values.protocol == 'rest':
    target = rest_url(values.server, values.model_name, values.model_version)
    outputs = send_rest(target, rest_request_body(videos, values.rest_format), values.timeout)
  else:
    target = values.server
    outputs = send_grpc(values.server, grpc_request(videos, values.model_name, values.model_version), values.timeout)
  print(f'{values.video}: {len(frames)} frames of {frames.shape[1]}x{frames.shape[2]} sent to {target}')
  for rank, (label, probability) in enumerate(top_classes(outputs, values.top_k), start=1):
    print(f'{rank:2d}. {label}  {probability:.4f}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
