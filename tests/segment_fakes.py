"""Test doubles for ``segment``: a numpy engine and synthetic fundus photographs.

``DarkIsVessel`` calls a pixel vessel when its network input (the standardised green
channel) is dark, which is what vessels are: the pipeline's geometry, FOV handling and
output writing can be tested without a trained model, fast and deterministically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vesselcli.engines.base import ModelInfo
from vesselcli.imaging.preprocess import Preprocessing


class DarkIsVessel:
    """An ``Engine``: logits = -4 x (dark is vessel), threshold 0.5; records batch shapes."""

    name = "fake"
    device = "cpu"

    def __init__(self, fov_diameter: float = 120.0, tile_multiple: int = 8, on_infer=None) -> None:  # noqa: ANN001
        self.info = ModelInfo(Preprocessing(fov_diameter=fov_diameter), 0.5, {"fake": True}, tile_multiple)
        self.batches: list[tuple[int, ...]] = []
        self.on_infer = on_infer
        self.closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape)
        if self.on_infer is not None:
            self.on_infer(len(self.batches))
        return (-4.0 * batch[:, :1]).astype(np.float32)

    def close(self) -> None:
        self.closed = True


def fundus(height: int = 96, width: int = 110, seed: int = 0) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB: a lit disc on black with a few dark vessel-like lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = 0.45 * min(height, width)
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= radius**2
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[disc] = (200, 110, 60)
    for _ in range(4):
        row = int(rng.integers(height // 4, 3 * height // 4))
        rgb[row : row + 2, :, :][disc[row : row + 2]] = (120, 40, 20)
    return rgb


def write_fundus(path: Path, height: int = 96, width: int = 110, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fundus(height, width, seed)).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


class KillOnce:
    """A Ray actor hook (``RayOptions.hook``): the first batch that reaches it kills its worker.

    The worker process is killed with SIGKILL (as the kernel's out-of-memory killer or a lost
    node would end it) once per ``marker`` file, which records the names the killed batch held.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __call__(self, names: list[str]) -> None:
        import os
        import signal

        try:
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.write(fd, "\n".join(names).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


class RaiseOn:
    """A Ray actor hook that raises (a bug in our own code, which Ray does not retry) on a batch holding ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, names: list[str]) -> None:
        if self.name in names:
            raise RuntimeError(f"a fault injected into the batch holding {self.name}")


class KillWhenever:
    """A Ray actor hook that SIGKILLs its worker every time a batch holds ``name`` (an image that
    crashes its decoder or exhausts memory whenever it is tried); each kill appends the batch's
    names, one line, to ``log``."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = str(log)

    def __call__(self, names: list[str]) -> None:
        import os
        import signal

        if self.name not in names:
            return
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(" ".join(sorted(names)) + "\n")
        os.kill(os.getpid(), signal.SIGKILL)


class NodeLog:
    """A Ray actor hook that appends ``<node id> <names...>`` to ``log`` for every batch; on node
    ``stall_on`` it then sleeps ``seconds`` (long enough for a test to remove that node under it)."""

    def __init__(self, log: Path, stall_on: str | None = None, seconds: float = 0.0) -> None:
        self.log = str(log)
        self.stall_on = stall_on
        self.seconds = seconds

    def __call__(self, names: list[str]) -> None:
        import time

        import ray

        node = ray.get_runtime_context().get_node_id()
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(" ".join([node, *sorted(names)]) + "\n")
        if node == self.stall_on:
            time.sleep(self.seconds)
