r"""Predicts the action in a video file with an exported D3D model: over TF Serving's REST or gRPC API, or locally.

  python -m official_d3d.serving.client --video=clip.mp4 --server=localhost:8501 --model_name=d3d --protocol=rest
  python -m official_d3d.serving.client --video=clip.mp4 --server=localhost:8500 --model_name=d3d --protocol=grpc
  python -m official_d3d.serving.client --video=clip.mp4 --saved_model=/tmp/serving/d3d/1

The video is read by the converter's own reader (`d3d_core.video_reader`): resampled to `--fps` (25) by each frame's
timestamp, so variable-frame-rate videos give the frames they were trained on, and resized to a short side of
`--short_side` (256), the converter's defaults; its centre `--num_frames` frames are JPEG-encoded and sent to the
`serve_jpeg` signature, which samples, crops and normalises the model's clip from them as evaluation does.
Send at least the model's clip span (num_frames x stride of its training run); the default, 64, is the published
S3D-G clip.

Building a request (`rest_request_body`, `grpc_request`) is separate from sending it (`send_rest`, `send_grpc`,
`predict_locally`), so the bodies can be checked without a server. `--saved_model` runs the gRPC request in this
process against a SavedModel version folder, with no server.

A server that does not answer within `--timeout` seconds, or answers with an error, a video the reader refuses
(missing, not a video, corrupt, under 2 frames), or a `--saved_model` that is not a version folder end the command
with one `error:` line naming the address or the file (exit status 1; `d3d_core.cli`).
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import base64
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags
import cv2
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from d3d_core import cli
from d3d_core import video_reader
from official_d3d import export_saved_model

SIGNATURE = export_saved_model.JPEG_SIGNATURE
INPUT = export_saved_model.JPEG_INPUT
PROTOCOLS = ('rest', 'grpc')
REST_FORMATS = ('instances', 'inputs')  # TF Serving's row and columnar request layouts
MAX_GRPC_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0  # a loaded server answers a 64-frame clip in seconds; a hung one must not hang the client
SAVED_MODEL_FILENAME = 'saved_model.pb'


class ClientError(Exception):
  """A video or a SavedModel the client cannot use, or a request that failed: the command line prints the message
  alone."""


class ServerError(ClientError):
  """The server did not answer, or answered with an error."""


def read_frames(path: str, num_frames: int = 64, short_side: int = video_reader.DecodeConfig.short_side,
                fps: float = video_reader.DecodeConfig.fps) -> np.ndarray:
  """RGB uint8 `[T, H, W, 3]`: the centre `num_frames` frames (0: all) of the video as the converter decodes it at
  `fps` with the short side `short_side` (0: as decoded)."""
  try:
    frames = video_reader.read_video(path, video_reader.DecodeConfig(fps=fps, short_side=short_side)).frames
  except (ValueError, video_reader.VideoDecodeError) as error:  # ValueError: settings DecodeConfig refuses
    raise ClientError(str(error)) from None
  if not num_frames:
    return frames
  start = max(len(frames) - num_frames, 0) // 2
  return frames[start:start + num_frames]


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
  if 'predictions' in response:
    predictions = response['predictions']
    return {name: np.asarray([p[name] for p in predictions]) for name in predictions[0]}
  if 'outputs' in response:
    return {name: np.asarray(values) for name, values in response['outputs'].items()}
  raise ValueError(f'not a TF Serving predict response: keys {sorted(response)}')


def _os_reason(error: BaseException) -> str:
  """The operating system's words for a failed connection ('Connection refused', 'Name or service not known'), found
  down the chain of errors that requests and urllib3 wrap them in; else the error's own message."""
  cause = error
  while cause is not None:
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
    cause = getattr(cause, 'reason', None) or cause.__cause__ or cause.__context__
  return str(error)


def _rest_error_text(reply: requests.Response) -> str:
  """TF Serving's `{"error": ...}` text of a failed REST request, else the start of the body."""
  try:
    return str(reply.json()['error'])
  except (ValueError, KeyError, TypeError):
    return reply.text[:200]


def send_rest(url: str, body: Mapping, timeout: float = DEFAULT_TIMEOUT_S) -> Dict[str, np.ndarray]:
  """POSTs `body` to TF Serving's REST `url`; ServerError when no answer comes within `timeout` s, or an error does."""
  try:
    reply = requests.post(url, data=json.dumps(body), headers={'Content-Type': 'application/json'}, timeout=timeout)
  except requests.Timeout as error:
    raise ServerError(f'the REST server at {url} did not answer within {timeout:g} s: check that it is not '
                      'overloaded or hung, or allow more time with --timeout') from error
  except requests.ConnectionError as error:
    raise ServerError(f'no REST server answers at {url} ({_os_reason(error)}): check that tensorflow_model_server '
                      'runs there with --rest_api_port set to that port') from error
  if reply.status_code != 200:
    raise ServerError(f'the REST server at {url} answered HTTP {reply.status_code}: {_rest_error_text(reply)}')
  try:
    return parse_rest_response(reply.json())
  except ValueError as error:
    raise ServerError(f'the REST server at {url} answered without predictions: {reply.text[:200]}') from error


def parse_grpc_response(response: predict_pb2.PredictResponse) -> Dict[str, np.ndarray]:
  return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def send_grpc(server: str, request: predict_pb2.PredictRequest,
              timeout: float = DEFAULT_TIMEOUT_S) -> Dict[str, np.ndarray]:
  """Sends `request` to TF Serving's gRPC PredictionService at `server` (host:port); ServerError when no answer comes
  within `timeout` s, or an error does."""
  import grpc  # pylint: disable=g-import-not-at-top  (only the gRPC protocol needs it)
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  options = [('grpc.max_send_message_length', MAX_GRPC_MESSAGE_BYTES),
             ('grpc.max_receive_message_length', MAX_GRPC_MESSAGE_BYTES)]
  with grpc.insecure_channel(server, options=options) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
      return parse_grpc_response(stub.Predict(request, timeout=timeout))
    except grpc.RpcError as error:
      if error.code() == grpc.StatusCode.UNAVAILABLE:
        raise ServerError(f'no gRPC server answers at {server} ({error.details()}): check that '
                          'tensorflow_model_server runs there with --port set to that port') from error
      if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise ServerError(f'the gRPC server at {server} did not answer within {timeout:g} s: check that it is not '
                          'overloaded or hung, or allow more time with --timeout') from error
      raise ServerError(f'the gRPC server at {server} answered {error.code().name}: {error.details()}') from error


def version_folders(path: str) -> List[str]:
  """The version folders (integer names, holding a SavedModel) in a served model's base folder, oldest first."""
  versions = sorted(int(name.rstrip('/')) for name in tf.io.gfile.listdir(path) if name.rstrip('/').isdigit())
  return [os.path.join(path, str(version)) for version in versions
          if tf.io.gfile.exists(os.path.join(path, str(version), SAVED_MODEL_FILENAME))]


def load_saved_model(path: str):
  """`tf.saved_model.load(path)` once `path` is checked to be a SavedModel version folder. The base folder that TF
  Serving is given is refused, naming its versions: the client never picks one, which version is meant is the
  user's to say."""
  if not tf.io.gfile.isdir(path):
    raise ClientError(f'SavedModel folder {path} not found')
  if not tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILENAME)):
    versions = version_folders(path)
    if versions:
      raise ClientError(f'{path} is the base folder of a served model, not a version of it: pass a version folder, '
                        f'e.g. --saved_model={versions[-1]} (the latest, which TF Serving serves; all: '
                        f'{", ".join(versions)})')
    raise ClientError(f'{path} holds no {SAVED_MODEL_FILENAME}: pass a version folder that '
                      'official_d3d.export_saved_model wrote (e.g. /models/d3d/1)')
  return tf.saved_model.load(path)


def predict_locally(saved_model, request: predict_pb2.PredictRequest) -> Dict[str, np.ndarray]:
  """Runs a PredictRequest on a SavedModel (a version folder, or one `load_saved_model` returned), as TF Serving
  would: the signature it names, fed with its input tensors."""
  if isinstance(saved_model, str):
    saved_model = load_saved_model(saved_model)
  name = request.model_spec.signature_name or export_saved_model.VIDEO_SIGNATURE
  if name not in saved_model.signatures:
    raise ClientError(f'the SavedModel has no signature {name!r}; it has {sorted(saved_model.signatures)}')
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
  flags.DEFINE_integer('short_side', video_reader.DecodeConfig.short_side,
                       'Short side of the frames sent (0: as decoded); the converter\'s --short_side.')
  flags.DEFINE_float('fps', video_reader.DecodeConfig.fps, 'Frame rate the video is resampled to, by timestamp; the '
                     'converter\'s --fps.')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality of the frames sent.')
  flags.DEFINE_integer('top_k', 5, 'Classes to print (at most the --top_k of the export).')
  flags.DEFINE_float('timeout', DEFAULT_TIMEOUT_S, 'Seconds to wait for the server\'s answer (REST and gRPC).')
  flags.mark_flag_as_required('video')
  flags.register_multi_flags_validator(
      ['server', 'saved_model'], lambda v: (v['server'] is None) != (v['saved_model'] is None),
      message='give exactly one of --server and --saved_model')


def main(argv):
  del argv  # Everything comes in through flags.
  values = flags.FLAGS
  saved_model = load_saved_model(values.saved_model) if values.saved_model else None  # refused before any decoding
  frames = read_frames(values.video, values.num_frames, values.short_side, values.fps)
  videos = [encode_jpeg(frames, values.jpeg_quality)]
  if saved_model is not None:
    target = values.saved_model
    outputs = predict_locally(saved_model, grpc_request(videos, values.model_name, values.model_version))
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
  cli.run_main(main, (ClientError,), interrupted='no prediction was made')
