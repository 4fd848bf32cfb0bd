"""Packaging, so that Beam workers (Dataflow `--setup_file=./setup.py`) and `pip install .` get this project."""

import pathlib

import setuptools

REQUIREMENTS = [line.split('#')[0].strip()
                for line in (pathlib.Path(__file__).parent / 'requirements.txt').read_text().splitlines()
                if line.split('#')[0].strip()]

setuptools.setup(
    name='d3d',
    version='0.1.0',
    description='Distilled 3D Networks (D3D) for video action recognition in TensorFlow 2 / Keras 3',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['d3d_core*', 'official_d3d*', 'tfrecord_tools*']),
    package_data={'official_d3d': ['configs/experiments/*.flags']},
    install_requires=REQUIREMENTS,
)
