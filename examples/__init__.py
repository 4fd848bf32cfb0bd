"""Applications built on the library (`d3d_core`, `tfrecord_tools`, `official_d3d`); nothing there imports them."""
