"""Sliding-window prediction: cut images into overlapping tiles, batch them, blend them back.

The tiler knows nothing of engines: it takes a *predictor*, any callable mapping a
``(N, C, T, T) float32`` batch of tiles to ``(N, K, T, T)`` outputs (probabilities here), so
every backend shares one stitcher and the tests can use an identity-like predictor.

- ``tile_origins``: start offsets along one axis, spread evenly so neighbours overlap by at
  least the requested amount; an axis no longer than a tile gets one tile at 0.
- Images smaller than a tile are padded with zeros (the network input's value outside the
  field of view) at the bottom and right, and the output is cropped back. With
  ``TileSpec.multiple`` set, tiles are shaped to the image (``tile_shape``): along each axis
  the fewest tiles of at most ``size`` that overlap by ``overlap``, each as short as that
  allows, rounded up to the multiple. An image no larger than a tile either way is predicted
  whole (a 565x584 DRIVE image runs as 568x584, not as a 592x592 square that holds 6% more
  pixels); a 1632x1168 FOV box runs as 2 x 2 tiles of 848x616 with 1024-pixel tiles (2.09 MP)
  where square 1024 tiles would feed 4.19 MP. Consecutive tiles of one shape share a batch.
- Blending: each tile's output is weighted by a Gaussian (sigma = side / 8 along each axis)
  or a constant and the weighted sum is divided by the summed weights, in float64, so seams
  vanish and an identity predictor reconstructs its input exactly.
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
    """Tile side ``size`` (pixels), minimum ``overlap`` between neighbours, tiles per ``batch``.

    ``multiple``: 0 cuts every image into square ``size`` tiles (engines with one fixed input
    size); above 0, an image no larger than ``size`` either way is one tile of its own size
    rounded up to ``multiple`` (engines that take any multiple of it).
    """

    size: int
    overlap: int
    batch: int
    blend: str = "gaussian"
    multiple: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"tile size must be at least 1 pixel, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap must be in [0, tile size {self.size}), got {self.overlap}")
        if self.batch < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {self.blend!r}")
        if self.multiple < 0:
            raise ValueError(f"tile multiple must be 0 (square tiles only) or positive, got {self.multiple}")


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


def blend_weights(size: int | tuple[int, int], mode: str = "gaussian") -> np.ndarray:
    """``(h, w) float64`` tile weights for a ``size`` = (h, w) tile (an int: square), all
    positive, 1 at the centre; Gaussian: exp(-x^2 / 2 sigma^2) along each axis, sigma = side / 8."""
    h, w = (size, size) if isinstance(size, int) else size
    if mode == "constant":
        return np.ones((h, w), dtype=np.float64)

    def axis_weights(side: int) -> np.ndarray:
        axis = np.arange(side, dtype=np.float64) - (side - 1) / 2.0
        return np.exp(-0.5 * (axis / (side / 8.0)) ** 2)

    weights = np.outer(axis_weights(h), axis_weights(w))
    # exp() of the corners stays far above zero for any tile side, but keep the floor explicit:
    # a zero weight would make a pixel covered by one tile divide 0 by 0.
    return np.maximum(weights / weights.max(), 1e-12)


def tile_side(length: int, spec: TileSpec) -> int:
    """The side along one axis of ``length`` pixels of the tiles ``stream_tiled`` cuts.

    ``spec.size`` when ``spec.multiple`` is 0 (square tiles). Otherwise the fewest tiles of
    at most ``spec.size`` that cover the axis overlapping by ``spec.overlap``,
    n = ceil((length - overlap) / (size - overlap)), each as short as n tiles allow,
    ceil((length + (n - 1) overlap) / n), rounded up to the multiple: a 1168-pixel axis
    with tiles of 1024 and overlap 64 gets 2 tiles of 616, not 2 of 1024. An axis no longer
    than ``size`` is one tile of its own length rounded up to the multiple. Never above
    ``size`` when ``size`` is a multiple of ``multiple`` (``SegmentConfig.tile_spec`` makes it one).
    """
    if not spec.multiple:
        return spec.size
    m = spec.multiple
    if length <= spec.size:
        return -(-length // m) * m
    count = -(-(length - spec.overlap) // (spec.size - spec.overlap))
    side = -(-(length + (count - 1) * spec.overlap) // count)
    return -(-side // m) * m


def tile_shape(shape: tuple[int, int], spec: TileSpec) -> tuple[int, int]:
    """(h, w) of every tile of an image of ``shape`` = (H, W): ``tile_side`` of each axis."""
    return tile_side(shape[0], spec), tile_side(shape[1], spec)


def tile_shapes(shape: tuple[int, int], spec: TileSpec) -> list[tuple[int, int]]:
    """(h, w) of every tile ``stream_tiled`` feeds the predictor for an image of ``shape``."""
    th, tw = tile_shape(shape, spec)
    count = len(axis_origins(max(shape[0], th), th, spec)) * len(axis_origins(max(shape[1], tw), tw, spec))
    return [(th, tw)] * count


def axis_origins(length: int, side: int, spec: TileSpec) -> list[int]:
    """``tile_origins`` of tiles of ``side`` along an axis padded to ``length`` >= ``side``.

    An axis one tile covers needs no overlap (its tile may be shorter than ``spec.overlap``).
    """
    return tile_origins(length, side, spec.overlap if length > side else 0)


def tile_count(shape: tuple[int, int], spec: TileSpec) -> int:
    """Number of tiles ``stream_tiled`` cuts from an image of ``shape`` = (H, W)."""
    return len(tile_shapes(shape, spec))


@dataclass
class _Canvas(Generic[K]):
    """One image being predicted: its padded input, the blended sums and the tiles left."""

    key: K
    image: np.ndarray  # (C, Hp, Wp) float32, zero-padded
    shape: tuple[int, int]  # (H, W) before padding
    origins: list[tuple[int, int]]
    tile: tuple[int, int]  # (h, w) of each of its tiles
    remaining: int = 0
    total: np.ndarray | None = None  # (K, Hp, Wp) float64 weighted sum (the output itself for one tile)
    weight: np.ndarray | None = None  # (Hp, Wp) float64 summed weights (None for one tile)
    error: Exception | None = None


def _canvas(key: K, image: np.ndarray, spec: TileSpec) -> _Canvas[K]:
    if image.ndim != 3:
        raise ValueError(f"stream_tiled expects (C, H, W) images, got shape {image.shape}")
    _, h, w = image.shape
    th, tw = tile_shape((h, w), spec)
    ph, pw = max(h, th), max(w, tw)  # padded to at least one tile
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, 0), (0, ph - h), (0, pw - w)))
    origins = [(y, x) for y in axis_origins(ph, th, spec) for x in axis_origins(pw, tw, spec)]
    return _Canvas(key, np.ascontiguousarray(image, dtype=np.float32), (h, w), origins, (th, tw), remaining=len(origins))


def stream_tiled(
    images: Iterable[tuple[K, np.ndarray]], predictor: Predictor, spec: TileSpec
) -> Iterator[tuple[K, np.ndarray | None, Exception | None]]:
    """Predict every ``(key, (C, H, W) float32 image)`` by tiles, batching across images.

    Yields ``(key, output, None)`` with the ``(K, H, W) float32`` blended output, in input
    order, as soon as an image's last tile is predicted; or ``(key, None, error)`` when the
    predictor raised (or returned a wrong shape) on a batch holding one of its tiles: every
    image in that batch fails, the others go on.
    """
    weights: dict[tuple[int, int], np.ndarray] = {}  # per tile shape
    open_canvases: deque[_Canvas[K]] = deque()
    pending: list[tuple[_Canvas[K], tuple[int, int]]] = []

    def run() -> None:
        live = [(c, o) for c, o in pending if c.error is None]
        pending.clear()
        if not live:
            return
        th, tw = live[0][0].tile
        batch = np.stack([c.image[:, y : y + th, x : x + tw] for c, (y, x) in live])
        try:
            out = np.asarray(predictor(batch))
            if out.ndim != 4 or out.shape[0] != len(live) or out.shape[2:] != (th, tw):
                raise ValueError(
                    f"predictor returned shape {out.shape} for a batch of shape {batch.shape}; "
                    f"expected ({len(live)}, K, {th}, {tw})"
                )
        except Exception as exc:  # noqa: BLE001 - reported per image by the caller
            for c, _ in live:
                c.error = exc
            return
        for (c, (y, x)), tile_out in zip(live, out):
            if len(c.origins) == 1:
                # One tile covers the image: its output is the answer, no blending to do.
                c.total = tile_out  # weight stays None: nothing to divide
                c.remaining -= 1
                continue
            if c.total is None:
                hp, wp = c.image.shape[1:]
                c.total = np.zeros((tile_out.shape[0], hp, wp), dtype=np.float64)
                c.weight = np.zeros((hp, wp), dtype=np.float64)
            w = weights.get((th, tw))
            if w is None:
                w = weights[(th, tw)] = blend_weights((th, tw), spec.blend)
            c.total[:, y : y + th, x : x + tw] += w * tile_out
            c.weight[y : y + th, x : x + tw] += w
            c.remaining -= 1

    def finished() -> Iterator[tuple[K, np.ndarray | None, Exception | None]]:
        while open_canvases and (open_canvases[0].error is not None or open_canvases[0].remaining == 0):
            c = open_canvases.popleft()
            if c.error is not None:
                yield c.key, None, c.error
                continue
            h, w = c.shape
            blended = c.total if c.weight is None else c.total / c.weight
            out = np.ascontiguousarray(blended[:, :h, :w], dtype=np.float32)
            yield c.key, out, None

    for key, image in images:
        canvas = _canvas(key, image, spec)
        open_canvases.append(canvas)
        if pending and pending[0][0].tile != canvas.tile:
            run()  # a batch holds tiles of one shape
            yield from finished()
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
