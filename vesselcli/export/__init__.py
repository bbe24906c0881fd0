"""Turning a training checkpoint into what ``segment`` runs, each step proven before it is kept.

- ``onnx_export``: checkpoint -> ONNX, checked against PyTorch on real tiles.
- ``tensorrt_engine``: ONNX -> TensorRT engine (needs the ``tensorrt`` package on an NVIDIA GPU).
- ``errors``: what both raise.
"""
