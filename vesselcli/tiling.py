"""Sliding-window prediction: cut images into overlapping tiles, batch them, blend them back.

The tiler knows nothing of engines: it takes a *predictor*, any callable mapping a
``(N, C, T, T) float32`` batch of tiles to ``(N, K, T, T)`` outputs (probabilities here), so
every backend shares one stitcher and the tests can use an identity-like predictor.

- ``tile_origins``: start offsets along one axis, spread evenly so neighbours overlap by at
  least the requested amount; an axis no longer than a tile gets one tile at 0.
- Images smaller than a tile are padded with zeros (the network input's value outside the
  field of view) at the bottom and right, and the output is cropped back.
- Blending: each tile's output is weighted by a Gaussian (sigma = tile / 8) or a constant
  and the weighted sum is divided by the summed weights, in float64, so seams vanish and an
  identity predictor reconstructs its input exactly.
- ``stream_tiled`` batches tiles *across* images, so the engine is fed full batches however
  small the images are; ``sliding_window`` is the one-image form.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

#: A batch of tiles ``(N, C, T, T) float32`` -> ``(N, K, T, T)`` outputs.
Predictor = Callable[[np.ndarray], np.ndarray]
K = TypeVar("K")

BLEND_MODES = ("gaussian", "constant")


@dataclass(frozen=True)
class TileSpec:
    """Tile side ``size`` (pixels), minimum ``overlap`` between neighbours, tiles per ``batch``."""

    size: int
    overlap: int
    batch: int
    blend: str = "gaussian"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"tile size must be at least 1 pixel, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap must be in [0, tile size {self.size}), got {self.overlap}")
        if self.batch < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {self.blend!r}")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``[0, length)`` along one axis.

    Consecutive tiles overlap by at least ``overlap`` pixels; the first starts at 0, the last
    ends at ``length`` and the rest are spread evenly between. ``length <= tile`` gives ``[0]``
    (the image is padded up to the tile).
    """
    if length < 1 or tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need length >= 1, tile >= 1 and 0 <= overlap < tile; got {length}, {tile}, {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def blend_weights(size: int, mode: str = "gaussian") -> np.ndarray:
    """``(size, size) float64`` tile weights, all positive, 1 at the centre."""
    if mode == "constant":
        return np.ones((size, size), dtype=np.float64)
    sigma = size / 8.0
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (axis / sigma) ** 2)
    weights = np.outer(g, g)
    # exp() of the corners stays far above zero for any tile side, but keep the floor explicit:
    # a zero weight would make a pixel covered by one tile divide 0 by 0.
    return np.maximum(weights / weights.max(), 1e-12)


def padded_shape(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    """(H, W) after padding so that each side is at least one tile."""
    return max(shape[0], tile), max(shape[1], tile)


def tile_count(shape: tuple[int, int], spec: TileSpec) -> int:
    """Number of tiles ``stream_tiled`` cuts from an image of ``shape`` = (H, W)."""
    h, w = padded_shape(shape, spec.size)
    return len(tile_origins(h, spec.size, spec.overlap)) * len(tile_origins(w, spec.size, spec.overlap))


@dataclass
class _Canvas(Generic[K]):
    """One image being predicted: its padded input, the blended sums and the tiles left."""

    key: K
    image: np.ndarray  # (C, Hp, Wp) float32, zero-padded
    shape: tuple[int, int]  # (H, W) before padding
    origins: list[tuple[int, int]]
    remaining: int = 0
    total: np.ndarray | None = None  # (K, Hp, Wp) float64 weighted sum
    weight: np.ndarray | None = None  # (Hp, Wp) float64 summed weights
    error: Exception | None = None


def _canvas(key: K, image: np.ndarray, tile: int, overlap: int) -> _Canvas[K]:
    if image.ndim != 3:
        raise ValueError(f"stream_tiled expects (C, H, W) images, got shape {image.shape}")
    _, h, w = image.shape
    ph, pw = padded_shape((h, w), tile)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, 0), (0, ph - h), (0, pw - w)))
    origins = [(y, x) for y in tile_origins(ph, tile, overlap) for x in tile_origins(pw, tile, overlap)]
    return _Canvas(key, np.ascontiguousarray(image, dtype=np.float32), (h, w), origins, remaining=len(origins))


def stream_tiled(
    images: Iterable[tuple[K, np.ndarray]], predictor: Predictor, spec: TileSpec
) -> Iterator[tuple[K, np.ndarray | None, Exception | None]]:
    """Predict every ``(key, (C, H, W) float32 image)`` by tiles, batching across images.

    Yields ``(key, output, None)`` with the ``(K, H, W) float32`` blended output, in input
    order, as soon as an image's last tile is predicted; or ``(key, None, error)`` when the
    predictor raised (or returned a wrong shape) on a batch holding one of its tiles: every
    image in that batch fails, the others go on.
    """
    tile = spec.size
    weights = blend_weights(tile, spec.blend)
    open_canvases: deque[_Canvas[K]] = deque()
    pending: list[tuple[_Canvas[K], tuple[int, int]]] = []

    def run() -> None:
        live = [(c, o) for c, o in pending if c.error is None]
        pending.clear()
        if not live:
            return
        batch = np.stack([c.image[:, y : y + tile, x : x + tile] for c, (y, x) in live])
        try:
            out = np.asarray(predictor(batch))
            if out.ndim != 4 or out.shape[0] != len(live) or out.shape[2:] != (tile, tile):
                raise ValueError(
                    f"predictor returned shape {out.shape} for a batch of shape {batch.shape}; "
                    f"expected ({len(live)}, K, {tile}, {tile})"
                )
        except Exception as exc:  # noqa: BLE001 - reported per image by the caller
            for c, _ in live:
                c.error = exc
            return
        for (c, (y, x)), tile_out in zip(live, out):
            if c.total is None:
                hp, wp = c.image.shape[1:]
                c.total = np.zeros((tile_out.shape[0], hp, wp), dtype=np.float64)
                c.weight = np.zeros((hp, wp), dtype=np.float64)
            c.total[:, y : y + tile, x : x + tile] += weights * tile_out
            c.weight[y : y + tile, x : x + tile] += weights
            c.remaining -= 1

    def finished() -> Iterator[tuple[K, np.ndarray | None, Exception | None]]:
        while open_canvases and (open_canvases[0].error is not None or open_canvases[0].remaining == 0):
            c = open_canvases.popleft()
            if c.error is not None:
                yield c.key, None, c.error
                continue
            h, w = c.shape
            out = (c.total / c.weight)[:, :h, :w].astype(np.float32)
            yield c.key, out, None

    for key, image in images:
        canvas = _canvas(key, image, tile, spec.overlap)
        open_canvases.append(canvas)
        for origin in canvas.origins:
            if canvas.error is not None:
                break
            pending.append((canvas, origin))
            if len(pending) == spec.batch:
                run()
                yield from finished()
    if pending:
        run()
    yield from finished()


def sliding_window(image: np.ndarray, predictor: Predictor, spec: TileSpec) -> np.ndarray:
    """Predict one ``(C, H, W) float32`` image by tiles; returns ``(K, H, W) float32``."""
    for _, out, error in stream_tiled([(0, image)], predictor, spec):
        if error is not None:
            raise error
        return out
    raise RuntimeError("stream_tiled yielded nothing for one image")  # unreachable by construction


def flip_averaged(predictor: Predictor) -> Predictor:
    """Test-time augmentation: the mean of the predictor over the four flips of each tile.

    Each flipped batch is predicted and flipped back before averaging, so a predictor that
    commutes with flips (like an identity) is unchanged.
    """

    def predict(batch: np.ndarray) -> np.ndarray:
        total = np.asarray(predictor(batch), dtype=np.float64)
        for axes in ((3,), (2,), (2, 3)):
            flipped = np.ascontiguousarray(np.flip(batch, axis=axes))
            total += np.flip(np.asarray(predictor(flipped), dtype=np.float64), axis=axes)
        return (total / 4.0).astype(np.float32)

    return predict
