"""Scripts that print measured figures and ratios; run them as `.venv/bin/python benchmarks/<name>.py`."""
