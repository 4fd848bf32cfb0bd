"""Training input on a tf.data service: reading and decoding run on CPU hosts (a dispatcher and its workers, started
with `python -m official_d3d.data_service`), the trainer receives finished batches.

Sharding is `ShardingPolicy.DYNAMIC`: the dispatcher hands out the shuffled, repeated file list one file at a time to
whichever worker asks next, so no video is read twice in an epoch by different workers, workers may come and go, and
the static policies' fixed worker list is not needed. Its guarantee is at most once: the files a worker held when it
died are skipped for that epoch. The order depends on the workers' timing, so `data.deterministic` cannot hold.

Each input pipeline of a tf.distribute run is a job of its own, reading its own share of the files, as the local
pipeline does: synchronous training takes one batch from every pipeline at each step, so a job shared by name would
balance nothing, and its name would have to tell one run on the dispatcher from another.

TensorFlow reports no lost worker: the job goes on with the others, and without any it waits for one, silently (a
worker that joins resumes it). `distribute` logs an error while the trainer waits too long, and `check_dispatcher`
turns a dispatcher that does not answer into a ConfigError; TensorFlow keeps retrying it, silently.

Two things TensorFlow 2.21 does that shape the pipeline: a `Dataset.random` zipped in is replayed whole on every
worker, so `video_input` folds each record's file into its clip's seed; and a file shuffle followed by a sequential
(not parallel) interleave makes every worker read every file, so the interleave stays parallel.
"""

import socket
import threading
import time
import weakref

from absl import logging
import grpc
import tensorflow as tf

from tensorflow.core.protobuf import service_config_pb2
from official_d3d.configs import d3d_config

PROTOCOL = 'grpc'
CONNECT_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 300.0
WORKER_COMMAND = 'python -m official_d3d.data_service --worker --dispatcher_address='


def dispatcher_target(address: str) -> str:
  """`grpc://host:port` of a dispatcher given as `host:port` or `grpc://host:port`."""
  address = address.strip()
  return address if '://' in address else f'{PROTOCOL}://{address}'


def check_dispatcher(address: str, setting: str = 'data.tf_data_service') -> None:
  """Raises ConfigError, naming `setting`, unless a gRPC server answers at `address` within CONNECT_TIMEOUT_S."""
  target = dispatcher_target(address)
  scheme, host_port = target.split('://', 1)
  if scheme != PROTOCOL or ':' not in host_port:
    raise d3d_config.ConfigError(f'{setting}={address!r} is not a dispatcher address (host:port or '
                                 f'{PROTOCOL}://host:port)')
  channel = grpc.insecure_channel(host_port)
  try:
    grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
  except grpc.FutureTimeoutError:
    raise d3d_config.ConfigError(
        f'{setting}={address!r}: no tf.data service dispatcher answers there within {CONNECT_TIMEOUT_S:.0f} s '
        '(start one with python -m official_d3d.data_service --dispatcher --port=PORT)') from None
  finally:
    channel.close()


class _StallWatch:
  """Times each request for a batch from the service and logs an error while one waits longer than `timeout_s`.

  Only the input pipeline holds it (its thread and tf.py_function, which keeps its functions for the process's life,
  hold it weakly), so the thread ends with the pipeline: the pipeline prefetches, so its last request is never
  answered, and a watch that outlived it would report that request for the rest of the process."""

  def __init__(self, address: str, timeout_s: float):
    self.address, self.timeout_s = address, timeout_s
    self.waiting_since = None  # monotonic time of the unanswered request, if any
    self.reported = None  # (waiting_since, when) of the last report
    self.lock = threading.Lock()
    self.thread = None

  def requested(self):
    with self.lock:
      self.waiting_since = time.monotonic()
      if self.thread is None:
        self.thread = threading.Thread(target=_watch_while_alive, args=(weakref.ref(self),),
                                       name='tf_data_service_watch', daemon=True)
        self.thread.start()
    return 0

  def received(self):
    with self.lock:
      self.waiting_since = None
    return 0

  def report_stall(self):
    """Logs an error if the open request has waited `timeout_s`, again every `timeout_s` while it still waits."""
    with self.lock:
      since = self.waiting_since
    now = time.monotonic()
    if since is None or now - since < self.timeout_s:
      return
    if self.reported is None or self.reported[0] != since or now - self.reported[1] >= self.timeout_s:
      logging.error('training input: no batch from the tf.data service at %s for %.0f s; are its workers '
                    'running (%s%s on the input hosts)? It resumes when one is.', self.address, now - since,
                    WORKER_COMMAND, self.address)
      self.reported = (since, now)


def _watch_while_alive(watch_ref: 'weakref.ref[_StallWatch]'):
  while (watch := watch_ref()) is not None:
    watch.report_stall()
    pause = min(watch.timeout_s / 4, 5.0)
    del watch  # not held while asleep
    time.sleep(pause)


def _weakly(method):
  """`method`, called through a weak reference to its object (0 once that is gone)."""
  method_ref = weakref.WeakMethod(method)

  def call():
    bound = method_ref()
    return 0 if bound is None else bound()

  return call


def distribute(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
  """`dataset` produced by the tf.data service at `address` (DYNAMIC sharding of its file list), in an unnamed job
  of this input pipeline's own; an error is logged while a batch has been awaited for STALL_TIMEOUT_S."""
  check_dispatcher(address)
  remote = dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=dispatcher_target(address)))
  watch = _StallWatch(address, STALL_TIMEOUT_S)
  on_request, on_receipt = _weakly(watch.requested), _weakly(watch.received)  # the closures must not hold `watch`
  # zip asks its inputs in order: the request is timed from before the service is asked until its answer.
  requests = tf.data.Dataset.from_tensors(0).repeat().map(lambda _: tf.py_function(on_request, [], tf.int32))

  def received(_, batch):
    with tf.control_dependencies([tf.py_function(on_receipt, [], tf.int32)]):
      return tf.nest.map_structure(tf.identity, batch)

  watched = tf.data.Dataset.zip((requests, remote)).map(received)
  watched.stall_watch = watch  # kept by every dataset made from this one and by their iterators
  return watched


def start_dispatcher(port: int = 0, work_dir: str = '') -> tf.data.experimental.service.DispatchServer:
  """A dispatcher serving on `port` (0: any free one). With `work_dir`, it journals its state there, so that a
  restarted dispatcher keeps its jobs (TensorFlow's fault-tolerant mode). Jobs whose trainers are gone are dropped
  (after TensorFlow's 5 minutes), so that their workers free the tasks' buffers."""
  return tf.data.experimental.service.DispatchServer(service_config_pb2.DispatcherConfig(
      port=port, protocol=PROTOCOL, work_dir=work_dir, fault_tolerant_mode=bool(work_dir),
      gc_dynamic_sharding_jobs=True))


def start_worker(dispatcher_address: str, port: int = 0, host: str = '') -> tf.data.experimental.service.WorkerServer:
  """A worker of the dispatcher at `dispatcher_address`, serving on `port` (0: any free one). Trainers fetch its
  batches directly at `host:port`, so `host` (default: this machine's name) must be how they reach this machine."""
  config = tf.data.experimental.service.WorkerConfig(
      dispatcher_address=dispatcher_target(dispatcher_address).split('://', 1)[1], port=port,
      worker_address=f'{host or socket.gethostname()}:%port%', protocol=PROTOCOL)
  return tf.data.experimental.service.WorkerServer(config)
