r"""Starts a server of the tf.data service that reads and decodes training clips on CPU hosts
(`data.tf_data_service`; `official_d3d/dataloaders/data_service.py` says how the input is shared out).

  python -m official_d3d.data_service --dispatcher --port=5050 [--work_dir=/shared/dispatcher]
  python -m official_d3d.data_service --worker --dispatcher_address=HOST:5050 --port=5051

One dispatcher, then any number of workers, on hosts that reach the records (their paths, or gs://, as the trainer
names them) and each other. Trainers start with `--tf_data_service=HOST:5050`. Each server prints the address it
serves and runs until it is stopped (Ctrl-C); workers may join or leave while a run trains.
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import socket

from absl import flags

from d3d_core import cli
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import data_service


def define_flags() -> None:
  flags.DEFINE_bool('dispatcher', False, 'Start the dispatcher, which hands the files out to the workers.')
  flags.DEFINE_bool('worker', False, 'Start a worker, which reads and decodes batches for the trainers.')
  flags.DEFINE_integer('port', 0, 'Port to serve on; 0: any free one (printed).')
  flags.DEFINE_string('dispatcher_address', '', 'Worker: host:port of the dispatcher.')
  flags.DEFINE_string('host', '', 'Worker: the name or address by which trainers reach this machine (default: its '
                      'host name).')
  flags.DEFINE_string('work_dir', '', 'Dispatcher: folder (gs:// too) where it keeps its state, so that a restarted '
                      'dispatcher resumes its jobs.')


def main(argv):
  del argv  # Everything comes in through flags.
  options = flags.FLAGS
  if options.dispatcher == options.worker:
    raise d3d_config.ConfigError('give one of --dispatcher and --worker')
  if options.dispatcher:
    server = data_service.start_dispatcher(options.port, options.work_dir)
    port = server.target.rsplit(':', 1)[1]
    print(f'tf.data service dispatcher serving on port {port}; workers: --dispatcher_address={socket.gethostname()}:'
          f'{port}, trainers: --tf_data_service={socket.gethostname()}:{port}', flush=True)
  else:
    if not options.dispatcher_address:
      raise d3d_config.ConfigError('--worker needs --dispatcher_address=host:port')
    data_service.check_dispatcher(options.dispatcher_address, '--dispatcher_address')
    server = data_service.start_worker(options.dispatcher_address, options.port, options.host)
    port = server._address.rsplit(':', 1)[1]  # pylint: disable=protected-access
    print(f'tf.data service worker serving at {options.host or socket.gethostname()}:{port} for the dispatcher at '
          f'{options.dispatcher_address}', flush=True)
  server.join()


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, (d3d_config.ConfigError,), interrupted='the server stopped')
