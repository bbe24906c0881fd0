"""vesselseg: retinal vessel segmentation for folders of fundus photographs."""
from __future__ import annotations

__version__ = "0.1.0"
