"""Reads a TFRecord file record by record, and says which record is damaged, where, and how.

TensorFlow's readers stop at the first damaged record with a message that names neither the file nor the record.
This reader checks the same framing (a little-endian uint64 length, its masked CRC32C, the data, its masked CRC32C)
and yields each damaged record with its index and byte offset, so that a caller can name it, or skip it and go on.
"""

import dataclasses
import struct
from typing import Iterator, Optional

import google_crc32c
import tensorflow as tf

_HEADER = struct.Struct('<QI')  # data length, masked CRC32C of the length
_FOOTER = struct.Struct('<I')  # masked CRC32C of the data
_CRC_MASK_DELTA = 0xa282ead8


@dataclasses.dataclass(frozen=True)
class Record:
  """One record of a file: its data, or (data None) why it cannot be read."""
  index: int
  offset: int  # bytes from the start of the file to the record's header
  data: Optional[bytes] = None
  damage: str = ''


def masked_crc32c(data: bytes) -> int:
  """The CRC32C of `data`, masked as TFRecord files store it."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xffffffff


def read_records(path: str) -> Iterator[Record]:
  """Every record of `path`, in order.

  A record whose data fails its checksum is yielded damaged and reading goes on after it. A damaged header, or a file
  that ends inside a record, leaves no way to find the records after it: it is yielded damaged, and is the last.
  """
  size = tf.io.gfile.stat(path).length
  index, offset = 0, 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while offset < size:
      remaining = size - offset
      header = f.read(_HEADER.size)
      if len(header) < _HEADER.size:
        yield Record(index, offset, damage=f'truncated: its last {remaining} bytes are not a whole record header')
        return
      length, length_crc = _HEADER.unpack(header)
      if masked_crc32c(header[:8]) != length_crc:
        yield Record(index, offset, damage=f'not a TFRecord file, or a corrupt one: the record header fails its '
                                           f'checksum, so its last {remaining} bytes cannot be read')
        return
      record_size = _HEADER.size + length + _FOOTER.size
      if record_size > remaining:
        yield Record(index, offset, damage=f'truncated: a record of {record_size} bytes, but the file ends '
                                           f'{remaining} bytes after its start')
        return
      data = f.read(length)
      (data_crc,) = _FOOTER.unpack(f.read(_FOOTER.size))
      if masked_crc32c(data) == data_crc:
        yield Record(index, offset, data=data)
      else:
        yield Record(index, offset, damage='corrupt: its data fails its checksum')
      index += 1
      offset += record_size
