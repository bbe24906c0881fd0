"""Training data: finding (image, vessel mask, FOV) triples and sampling augmented patches.

Images, masks and FOVs are read with ``vesselcli.io.imageio`` and turned into network input by
``vesselcli.imaging.preprocess.prepare``'s own steps, exactly as ``segment`` does.

Layouts understood by ``--data``:
- DRIVE: a root with ``training/{images,1st_manual,mask}`` (only the training split is used;
  the test split is never read by training);
- CHASE_DB1: a root with ``images``, ``1st_manual`` and ``fov``; the common protocol's first 20
  images (``Image_01L`` ... ``Image_10R``) are used (the split rule: ``vesselcli.io.protocols``);
- HRF: a root with ``images``, ``manual1`` and ``mask`` (the 15-image training split,
  3504x2336, annotations at full resolution);
- generic: a root with ``images`` and ``masks`` (and optionally ``fov``), paired by the
  documented name rule of ``vesselcli.io.pairing``; without FOV masks the FOV is detected.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vesselcli.analysis.morphology import mean_width
from vesselcli.imaging.fov import detect_fov
from vesselcli.io.imageio import read_image, read_mask
from vesselcli.io.pairing import pair_files
from vesselcli.imaging.preprocess import Preprocessing, network_input, resize_image, resize_mask, scaled_shape
from vesselcli.io.protocols import image_files, is_chase_test

from .augment import photometric


@dataclass
class Sample:
    """One annotated photograph at original size."""

    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    vessels: np.ndarray  # (H, W) bool
    fov: np.ndarray  # (H, W) bool


def find_triples(images: Path | list[Path], masks: Path, fovs: Path | None) -> list[tuple[Path, Path, Path | None]]:
    """(image, vessel mask, FOV or None) for the images (a folder's or a list), paired by name."""
    images = image_files(images) if isinstance(images, Path) else list(images)
    vessel_pairs, _, errors = pair_files(images, image_files(masks))
    if errors:
        raise ValueError("; ".join(errors.values()))
    fov_pairs = pair_files(images, image_files(fovs))[0] if fovs else {}
    missing = [p.name for p in images if p not in vessel_pairs]
    if missing:
        raise ValueError(f"no vessel mask in {masks} for {', '.join(missing[:5])}")
    return [(p, vessel_pairs[p], fov_pairs.get(p)) for p in images]


def find_training_files(root: Path) -> list[tuple[Path, Path, Path | None]]:
    """(image, vessel mask, FOV or None) for every training image under a dataset root."""
    root = Path(root)
    if (root / "training" / "images").is_dir():  # DRIVE root
        root = root / "training"
    if (root / "1st_manual").is_dir() and (root / "mask").is_dir():  # DRIVE split folder
        return find_triples(root / "images", root / "1st_manual", root / "mask")
    if (root / "1st_manual").is_dir() and (root / "fov").is_dir():  # CHASE_DB1
        triples = find_triples(root / "images", root / "1st_manual", root / "fov")
        return [t for t in triples if not is_chase_test(t[0])]
    if (root / "manual1").is_dir() and (root / "mask").is_dir():  # HRF
        return find_triples(root / "images", root / "manual1", root / "mask")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        fov = root / "fov" if (root / "fov").is_dir() else None
        return find_triples(root / "images", root / "masks", fov)
    raise ValueError(
        f"{root} is not a DRIVE, CHASE_DB1, HRF or generic dataset root: expected training/images "
        "(DRIVE), images + 1st_manual + fov (CHASE_DB1), images + manual1 + mask (HRF), "
        "or images + masks (generic)"
    )


def load_samples(roots: list[Path]) -> list[Sample]:
    samples = []
    for root in roots:
        for image, vessels, fov in find_training_files(root):
            rgb = read_image(image)
            samples.append(
                Sample(
                    name=f"{Path(root).name}/{image.name}",
                    rgb=rgb,
                    vessels=read_mask(vessels),
                    fov=read_mask(fov) if fov else detect_fov(rgb),
                )
            )
    return samples


def repackage(sample: Sample, size: int) -> Sample:
    """``sample`` re-packaged as the report's DRIVE-512 was made: image and annotation resized
    to ``size`` x ``size`` (aspect ratio not kept) with bilinear interpolation, the annotation
    then binarised at half intensity; the FOV is resized the same way."""

    def squash(mask: np.ndarray) -> np.ndarray:
        grey = cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_LINEAR)
        return grey > 127

    rgb = cv2.resize(sample.rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    return Sample(name=f"{sample.name}@{size}", rgb=rgb, vessels=squash(sample.vessels), fov=squash(sample.fov))


#: Datasets whose validation images are named rather than drawn: HRF's 15 training photographs
#: are 5 healthy, 5 diabetic and 5 glaucoma, so one of each group (the fifth) is held out.
FIXED_VALIDATION: dict[str, tuple[str, ...]] = {"HRF": ("05_h", "05_dr", "05_g")}


def split_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of each dataset's images (at least one each) for validation.

    Datasets are the first part of ``Sample.name``; each draws from one generator seeded with
    ``seed``, in the order they were given (DRIVE then CHASE_DB1 with seed 0 is the shipped
    model's split). Datasets in ``FIXED_VALIDATION`` hold out the named images instead (and
    draw nothing, so the others' split does not depend on them).
    """
    rng = np.random.default_rng(seed)
    by_root: dict[str, list[Sample]] = {}
    for s in samples:
        by_root.setdefault(s.name.split("/")[0], []).append(s)
    train, val = [], []
    for root, group in by_root.items():
        if root in FIXED_VALIDATION and fraction > 0:
            named = FIXED_VALIDATION[root]
            val += [s for s in group if Path(s.name).stem in named]
            train += [s for s in group if Path(s.name).stem not in named]
            continue
        n_val = max(1, round(len(group) * fraction)) if fraction > 0 else 0
        order = rng.permutation(len(group))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def leave_out(samples: list[Sample], patterns: tuple[str, ...]) -> tuple[list[Sample], list[Sample]]:
    """(kept, left out): samples whose name matches one of the shell ``patterns`` are left out.

    ``ValueError`` naming the pattern when one matches no sample (a typo would otherwise
    silently train on everything).
    """
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(s.name, pattern) for s in samples):
            raise ValueError(f"--leave-out {pattern!r} matches no training image (names look like {samples[0].name!r})")
    out = [any(fnmatch.fnmatchcase(s.name, p) for p in patterns) for s in samples]
    return [s for s, o in zip(samples, out) if not o], [s for s, o in zip(samples, out) if o]


def camera_value(fov: np.ndarray, pre: Preprocessing, scale: float = 1.0) -> float:
    """The camera plane's value for a photograph whose FOV (at its original size) is ``fov``:
    ``scale`` (``--camera-channel``) x log2(FOV diameter / the model's ``pre.fov_diameter``)."""
    from vesselcli.imaging.fov import fov_diameter

    return scale * math.log2(max(fov_diameter(fov), 1.0) / pre.fov_diameter)


def with_camera_plane(x: np.ndarray, value: float) -> np.ndarray:
    """``(1, h, w)`` network input -> ``(2, h, w)``: the input and a plane of ``value``."""
    return np.concatenate([x, np.full_like(x, value)])


ASPECT_JITTER = 1.08  # height scaled by up to this factor (or its inverse) against width


class PatchDataset:
    """Random augmented patches: ``samples_per_image`` per image and epoch.

    Item ``i`` is drawn from image ``i % len(samples)`` with a generator seeded by
    (seed, epoch, i), so every rank and worker gets reproducible, distinct patches.
    Returns ``(1, P, P) float32`` input, ``(1, P, P) float32`` target and FOV.
    """

    def __init__(
        self,
        samples: list[Sample],
        pre: Preprocessing,
        patch: int,
        samples_per_image: int,
        seed: int,
        calibre_range: tuple[float, float] | None = None,
        min_factor: float = 0.0,
        camera_channel: float = 0.0,
    ) -> None:
        from vesselcli.imaging.fov import fov_diameter

        self.samples = samples
        self.pre = pre
        self.patch = patch
        self.samples_per_image = samples_per_image
        self.seed = seed
        self.epoch = 0
        self.calibre_range = calibre_range
        # The FOV rule's factor, or ``min_factor`` where that is smaller: with
        # vesselcli.imaging.calibre.MIN_FACTOR, each photograph at the scale segment's calibre rule runs it.
        self.base_scale = [max(pre.fov_diameter / fov_diameter(s.fov), min_factor) for s in samples]
        # Multi-scale: each image's annotated calibre (mean width at original size), so a
        # patch can be drawn at the scale that gives its vessels a chosen calibre.
        self.calibre = [mean_width(s.vessels, s.fov) or 0.0 for s in samples] if calibre_range else []
        self.camera = [camera_value(s.fov, pre, camera_channel) for s in samples] if camera_channel else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def scale_of(self, k: int, rng: np.random.Generator) -> float:
        """The resampling factor of one patch of image ``k``.

        Default: the FOV rule's factor (at least ``min_factor``) times a jitter in [0.8, 1.25]. With ``calibre_range``
        (lo, hi): a target mean vessel width drawn log-uniformly from [lo, hi] pixels divided
        by the image's annotated calibre, so every dataset is seen with thin (lo) to thick
        (hi) vessels whatever its camera; the widest vessels are about 4-5x the mean width.
        """
        if self.calibre_range and self.calibre[k] > 0:
            lo, hi = self.calibre_range
            return math.exp(rng.uniform(math.log(lo), math.log(hi))) / self.calibre[k]
        return self.base_scale[k] * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))

    def __len__(self) -> int:
        return len(self.samples) * self.samples_per_image

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = index % len(self.samples)
        sample = self.samples[k]
        # Scale jitter spans the tolerance band of ``scale_factor`` and beyond; the aspect
        # jitter covers cameras and re-packagings that do not keep square pixels.
        factor = self.scale_of(k, rng)
        aspect = math.exp(rng.uniform(-math.log(ASPECT_JITTER), math.log(ASPECT_JITTER)))
        shape = scaled_shape(sample.rgb.shape[:2], factor)
        shape = (max(1, round(shape[0] * aspect)), shape[1])
        rgb = photometric(resize_image(sample.rgb, shape), rng)
        fov = resize_mask(sample.fov, shape)
        vessels = cv2.resize(sample.vessels.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR) > 0.5
        x = network_input(rgb, fov, self.pre)[0]
        xp, vp, fp = _random_patch(rng, x, vessels, fov, self.patch)
        return (xp if self.camera is None else with_camera_plane(xp, self.camera[k])), vp, fp


def _random_patch(rng: np.random.Generator, x: np.ndarray, vessels: np.ndarray, fov: np.ndarray, patch: int):
    """Rotate by a random angle and flip about a random FOV point, cut a ``patch`` square."""
    ys, xs = np.nonzero(fov)
    if ys.size:
        j = rng.integers(ys.size)
        cy, cx = float(ys[j]), float(xs[j])
    else:
        cy, cx = x.shape[0] / 2, x.shape[1] / 2
    angle = rng.uniform(0, 360)
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (patch / 2 - cx, patch / 2 - cy)
    if rng.random() < 0.5:  # horizontal flip in patch coordinates
        m = np.array([[-1, 0, patch - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    warp = lambda a, interp: cv2.warpAffine(a, m, (patch, patch), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # noqa: E731
    xp = warp(x, cv2.INTER_LINEAR)
    vp = warp(vessels.astype(np.float32), cv2.INTER_LINEAR) > 0.5
    fp = warp(fov.astype(np.uint8), cv2.INTER_NEAREST) > 0
    return xp[None].astype(np.float32), vp[None].astype(np.float32), fp[None].astype(np.float32)
