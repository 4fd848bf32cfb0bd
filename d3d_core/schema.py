"""Feature keys of the video records: the one place they are defined.

The names follow MediaPipe's MediaSequence layout (`mediapipe/util/sequence/media_sequence.py`) so that records
written by `tfrecord_tools` are readable by MediaPipe's dataset readers, Model Garden's video input, DMVR, Scenic and
other tools. The writer (`tfrecord_tools`) and the reader (`official_d3d.dataloaders`) both import this module;
nothing else spells a key. `KEY_TYPES` says where each key the writer emits lives and what type it holds.
"""

# Context features: one value per record.
EXAMPLE_ID = 'example/id'  # MediaPipe's Kinetics and demo readers require it
MEDIA_ID = 'clip/media_id'
DATA_PATH = 'clip/data_path'
CLIP_START_TIMESTAMP = 'clip/start/timestamp'  # microseconds: the first frame's time
CLIP_END_TIMESTAMP = 'clip/end/timestamp'  # microseconds, exclusive: the time the frame after the last would have
LABEL_INDEX = 'clip/label/index'  # a list in MediaPipe; ours holds one label
LABEL_STRING = 'clip/label/string'
IMAGE_FORMAT = 'image/format'
IMAGE_CHANNELS = 'image/channels'
IMAGE_HEIGHT = 'image/height'
IMAGE_WIDTH = 'image/width'
IMAGE_FRAME_RATE = 'image/frame_rate'

# Flow context features: MediaPipe's image keys under its FORWARD_FLOW prefix, and the bound, which is ours.
FLOW_PREFIX = 'FORWARD_FLOW'
FLOW_FORMAT = FLOW_PREFIX + '/image/format'
FLOW_CHANNELS = FLOW_PREFIX + '/image/channels'
FLOW_HEIGHT = FLOW_PREFIX + '/image/height'
FLOW_WIDTH = FLOW_PREFIX + '/image/width'
FLOW_FRAME_RATE = FLOW_PREFIX + '/image/frame_rate'
FLOW_BOUND = FLOW_PREFIX + '/bound'  # pixels; stored value v maps to (v / 255 * 2 - 1) * bound

# Feature lists: one value per frame.
IMAGE_ENCODED = 'image/encoded'
IMAGE_TIMESTAMP = 'image/timestamp'  # microseconds
FLOW_ENCODED = FLOW_PREFIX + '/image/encoded'
FLOW_TIMESTAMP = FLOW_PREFIX + '/image/timestamp'  # microseconds; frame i's flow has frame i's time

# Default flow truncation, in pixels (kinetics-i3d, MediaPipe).
DEFAULT_FLOW_BOUND = 20.0

# Where a key lives in a tf.train.SequenceExample, and the tf.train.Feature list type it holds.
CONTEXT = 'context'
FEATURE_LIST = 'feature_list'
BYTES = 'bytes'
INT64 = 'int64'
FLOAT = 'float'

# Every key the writer emits, with MediaPipe's place and type for it (FLOW_BOUND is ours, not MediaPipe's). The keys
# under FLOW_PREFIX are written only when the conversion computes flow.
KEY_TYPES = {
    EXAMPLE_ID: (CONTEXT, BYTES),
    MEDIA_ID: (CONTEXT, BYTES),
    DATA_PATH: (CONTEXT, BYTES),
    CLIP_START_TIMESTAMP: (CONTEXT, INT64),
    CLIP_END_TIMESTAMP: (CONTEXT, INT64),
    LABEL_INDEX: (CONTEXT, INT64),
    LABEL_STRING: (CONTEXT, BYTES),
    IMAGE_FORMAT: (CONTEXT, BYTES),
    IMAGE_CHANNELS: (CONTEXT, INT64),
    IMAGE_HEIGHT: (CONTEXT, INT64),
    IMAGE_WIDTH: (CONTEXT, INT64),
    IMAGE_FRAME_RATE: (CONTEXT, FLOAT),
    IMAGE_ENCODED: (FEATURE_LIST, BYTES),
    IMAGE_TIMESTAMP: (FEATURE_LIST, INT64),
    FLOW_FORMAT: (CONTEXT, BYTES),
    FLOW_CHANNELS: (CONTEXT, INT64),
    FLOW_HEIGHT: (CONTEXT, INT64),
    FLOW_WIDTH: (CONTEXT, INT64),
    FLOW_FRAME_RATE: (CONTEXT, FLOAT),
    FLOW_BOUND: (CONTEXT, FLOAT),
    FLOW_ENCODED: (FEATURE_LIST, BYTES),
    FLOW_TIMESTAMP: (FEATURE_LIST, INT64),
}
