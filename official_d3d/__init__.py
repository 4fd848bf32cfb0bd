"""D3D: Distilled 3D Networks for video action recognition, in TensorFlow 2 / Keras 3."""
