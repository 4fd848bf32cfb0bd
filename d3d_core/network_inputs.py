"""The network inputs a record holds: per modality, its frames' feature key, the channels a network receives, and
whether it is optical flow. One table, so that the input pipeline, the networks and the export agree on them.

(Not named `modalities`: that is the name of the tuples of modality names that the trainer passes around.)
"""

import dataclasses

from d3d_core import schema


@dataclasses.dataclass(frozen=True)
class Modality:
  """Where a modality's frames are stored and what the network receives."""
  feature_key: str
  channels: int  # at the network's input: flow images store (x, y, 0), of which the network gets (x, y)
  is_flow: bool


MODALITIES = {
    'rgb': Modality(feature_key=schema.IMAGE_ENCODED, channels=3, is_flow=False),
    'flow': Modality(feature_key=schema.FLOW_ENCODED, channels=2, is_flow=True),
}
