"""Offline conversion of videos into RGB + optical-flow TFRecords (MediaSequence layout)."""
