"""Hugging Face's environment for loading a model on a worker, in one place for every backend: both the torch
encoder (``ragindex.embedding``) and the ONNX export (``ragindex.onnx_model``) set it before transformers is
imported, and neither has to import the other for it."""

from __future__ import annotations

import os


def hugging_face_offline() -> None:
    """Before transformers loads a model: offline (models cannot be downloaded at run time), and no progress
    bars (they go to stderr, which Airflow logs as ERROR lines)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
