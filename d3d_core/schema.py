"""Feature keys of the video records: the one place they are defined.

The names follow MediaPipe's MediaSequence layout so that records written by `tfrecord_tools` are readable by Model
Garden's video input, DMVR, Scenic and other tools. The writer (`tfrecord_tools`) and the reader
(`official_d3d.dataloaders`) both import this module; nothing else spells a key.
"""

# Context features: one value per video.
MEDIA_ID = 'clip/media_id'
DATA_PATH = 'clip/data_path'
CLIP_START_TIMESTAMP = 'clip/start/timestamp'  # microseconds
CLIP_END_TIMESTAMP = 'clip/end/timestamp'  # microseconds
LABEL_INDEX = 'clip/label/index'
LABEL_STRING = 'clip/label/string'
IMAGE_FORMAT = 'image/format'
IMAGE_HEIGHT = 'image/height'
IMAGE_WIDTH = 'image/width'
IMAGE_FRAME_RATE = 'image/frame_rate'

# Flow context features: how the stored flow images decode back to pixels.
FLOW_PREFIX = 'FORWARD_FLOW'
FLOW_FORMAT = FLOW_PREFIX + '/image/format'
FLOW_BOUND = FLOW_PREFIX + '/bound'  # pixels; stored value v maps to (v / 255 * 2 - 1) * bound

# Feature lists: one value per frame.
IMAGE_ENCODED = 'image/encoded'
IMAGE_TIMESTAMP = 'image/timestamp'  # microseconds
FLOW_ENCODED = FLOW_PREFIX + '/image/encoded'

# Default flow truncation, in pixels (kinetics-i3d, MediaPipe).
DEFAULT_FLOW_BOUND = 20.0
