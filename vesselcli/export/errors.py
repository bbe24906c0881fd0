"""What ``vesselcli.export.onnx_export`` (ONNX) and ``vesselcli.export.tensorrt_engine`` both raise.

A module of its own so neither export stage imports the other to name its errors. Masks are
compared with ``vesselcli.analysis.metrics`` (Dice of the two masks), the project's one metric code.
"""
from __future__ import annotations


class ExportError(Exception):
    """The export or its parity check failed; the message says which case and by how much."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond the tolerances on some batch."""
