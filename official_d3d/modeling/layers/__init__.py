"""Keras layers shared by the video backbones."""
