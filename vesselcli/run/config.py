"""The options of ``vesselseg segment``, built once by the CLI and passed down frozen.

No module reads options from anywhere else (no globals, no environment, no hidden paths).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..io.imageio import DEFAULT_MAX_PIXELS
from .shards import Shard
from ..imaging.tiling import TileSpec

#: Defaults measured on a 2-core CPU (see the README's speed section). At the model's scale
#: DRIVE images are 565x584, CHASE_DB1 584x561 and DRIVE-512 567x567: a 592-pixel tile holds
#: each whole, so no pixel is predicted twice; smaller tiles (256, 320) cost 1.2-1.5x the
#: pixels and were slower. ``DEFAULT_TILE_SIZE`` is what exports and TensorRT's optimisation
#: profile are tuned for.
DEFAULT_TILE_SIZE = 592
#: ``segment``'s tile side: the largest TensorRT's default profile takes (``export.tensorrt_engine``,
#: tiles up to 1024). ONNX Runtime on the CPU costs the same per pixel from 544x544 to
#: 1168x1632 (about 0.21 s per megapixel, INT8), so fewer, larger tiles only save the overlap:
#: a 3504x2336 photograph under the calibre rule (a 1632x1168 FOV box) runs as 4 tiles of
#: 848x616 (2.09 MP, 460 ms) where 592-pixel squares fed 9 x 592 x 592 (3.15 MP, 715 ms).
#: Images that fit 592 run whole either way, so DRIVE-sized ones are not affected.
SEGMENT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 64
DEFAULT_BATCH_SIZE = 2
#: ... unless the engine runs several calls at once (ONNX Runtime on the CPU, see
#: ``pipeline.CPU_PARALLEL_CALLS``): then each call takes one tile, so no call waits for a
#: second image to fill its batch (20 DRIVE images, 2 cores: 1.83 s with 1, 1.94 s with 2).
PARALLEL_BATCH_SIZE = 1
DEFAULT_WORKERS = 2
SCALE_RULES = ("fov", "calibre")


@dataclass(frozen=True)
class SegmentConfig:
    """Everything one ``segment`` run needs besides the engine.

    ``inputs``: files and folders; ``out``: the output folder. ``gt_dir`` / ``fov_dir``:
    folders of annotations / FOV masks paired by ``vesselcli.io.pairing`` (``gt_pattern`` names
    the annotation of an image directly, e.g. ``{stem}_manual1``). ``threshold``: None means
    the model's own. ``workers``: reader threads and writer threads (each). ``batch_size``: tiles
    per engine call (None: see ``tile_spec``). ``max_pixels``:
    images decoding to more pixels are refused before decoding. ``pixel_size_um``:
    micrometres per pixel, for the morphology figures in mm and um (None: left empty, or
    taken per image from a DICOM input's Pixel Spacing). ``dicom_seg``: also write a DICOM
    Segmentation per DICOM input; ``keep_identifiers``: also write the DICOM inputs' patient
    identifiers to ``identifiers.csv`` (otherwise none is written anywhere in OUT).
    ``scale_rule``: "calibre" (the default, ``vesselcli.imaging.calibre``: the FOV rule's scale, but never
    shrink more than 2x, and rescale by the vessels' width where a first look finds them too
    wide) or "fov" (scale by the FOV diameter alone).
    ``shard``: do only the images of this shard (``vesselcli.run.shards``), recording them in
    ``OUT/parts``.
    """

    inputs: tuple[Path, ...]
    out: Path
    gt_dir: Path | None = None
    fov_dir: Path | None = None
    gt_pattern: str | None = None
    threshold: float | None = None
    workers: int = DEFAULT_WORKERS
    batch_size: int | None = None  # tiles per engine call; None: ``tile_spec`` chooses
    tile_size: int = SEGMENT_TILE_SIZE
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    tta: bool = False
    save_probabilities: bool = False
    overlays: bool = True
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    dicom_seg: bool = False
    keep_identifiers: bool = False
    scale_rule: str = "calibre"
    pixel_size_um: float | None = None
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"scale_rule must be one of {', '.join(SCALE_RULES)}, got {self.scale_rule!r}")
        if self.pixel_size_um is not None and not (math.isfinite(self.pixel_size_um) and self.pixel_size_um > 0):
            raise ValueError(f"pixel_size_um must be a positive number of micrometres, got {self.pixel_size_um}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        self.tile_spec(1)  # validates size, overlap and batch

    def tile_spec(self, multiple: int, fixed: tuple[int, int] | None = None, parallel_calls: int = 1) -> TileSpec:
        """The tiling for an engine needing sides that are multiples of ``multiple``.

        The tile side is rounded up to the multiple; an engine with one ``fixed`` input size
        gets that size (square engines only). Tiles per engine call: ``batch_size``, or when
        that is None ``PARALLEL_BATCH_SIZE`` for an engine running ``parallel_calls`` > 1 at
        once, else ``DEFAULT_BATCH_SIZE``.
        """
        size = self.tile_size
        if fixed is not None:
            if fixed[0] != fixed[1]:
                raise ValueError(f"engines with a non-square fixed input {fixed[1]}x{fixed[0]} are not supported")
            size = fixed[0]
        size = -(-size // multiple) * multiple
        overlap = min(self.tile_overlap, size - 1)
        # An engine that takes any multiple of its size runs an image that fits one tile at its
        # own size (see vesselcli.imaging.tiling); a fixed-size engine gets square tiles.
        batch = self.batch_size
        if batch is None:
            batch = PARALLEL_BATCH_SIZE if parallel_calls > 1 else DEFAULT_BATCH_SIZE
        return TileSpec(size=size, overlap=overlap, batch=batch, multiple=0 if fixed else multiple)
