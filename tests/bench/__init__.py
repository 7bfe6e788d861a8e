"""Benchmarks: one command each, a printed table and a JSON file; never part of the test suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: no CUDA noise in the tables
