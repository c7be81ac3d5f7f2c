"""Learned models: segmentation backbone, learned camera codec, training, release, runtimes.

Importing this package is light; torch and onnxruntime load only in the
modules (and backends) that need them.
"""
