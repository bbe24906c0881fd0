"""Static shards: which images shard I of N does, from a stable hash of each image's name.

An image belongs to shard ``sha256(name) mod N`` where ``name`` is its CSV ``image`` column
(the path relative to its input root). The key depends on the image's own name alone, so a
growing folder never moves an image from one shard to another, and every shard, listing the
same inputs, agrees on who does what without talking to the others.

``--shard auto`` reads the scheduler's environment: Slurm job arrays
(``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``, with ``SLURM_ARRAY_TASK_MIN`` and
``SLURM_ARRAY_TASK_STEP`` so ``--array=1-8`` or ``0-30:2`` work) or torchrun's ``RANK`` /
``WORLD_SIZE`` (also what Kubernetes indexed jobs can be given). Shard numbers are 0-based.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

T = TypeVar("T")


class ShardError(ValueError):
    """A shard that cannot be used; the message says what was expected and what was found."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ShardError(f"the shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index} does not exist among {self.count} (shards are numbered 0 to {self.count - 1})")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """``I-of-N``, as in the part's file names."""
        return f"{self.index}-of-{self.count}"


def shard_of(name: str, count: int) -> int:
    """The shard (0-based, of ``count``) of the image whose CSV name is ``name``."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select(items: Sequence[T], shard: Shard, name_of=lambda item: item.name) -> list[T]:  # noqa: ANN001
    """The ``items`` of ``shard``, in their order."""
    return [item for item in items if shard_of(name_of(item), shard.count) == shard.index]


def _integer(env: Mapping[str, str], key: str) -> int | None:
    text = env.get(key)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ShardError(f"{key}={text!r} is not a whole number") from None


def shard_from_env(env: Mapping[str, str]) -> Shard:
    """The shard a Slurm array task or a torchrun rank is (see the module docstring)."""
    task, count = _integer(env, "SLURM_ARRAY_TASK_ID"), _integer(env, "SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        first = _integer(env, "SLURM_ARRAY_TASK_MIN") or 0
        step = _integer(env, "SLURM_ARRAY_TASK_STEP") or 1
        if (task - first) % step:
            raise ShardError(f"SLURM_ARRAY_TASK_ID={task} is not on the array's grid (min {first}, step {step})")
        return Shard((task - first) // step, count)
    rank, world = _integer(env, "RANK"), _integer(env, "WORLD_SIZE")
    if rank is not None and world is not None:
        return Shard(rank, world)
    raise ShardError(
        "--shard auto found neither SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (a Slurm job array) "
        "nor RANK and WORLD_SIZE (torchrun); run it inside one of them or give --shard I/N"
    )


def parse_shard(text: str, env: Mapping[str, str]) -> Shard:
    """``"I/N"`` (0-based I) or ``"auto"`` (from ``env``) -> ``Shard``; ``ShardError`` otherwise."""
    if text == "auto":
        return shard_from_env(env)
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ShardError(f"'{text}' is not a shard; write I/N with 0 <= I < N (e.g. 0/4 ... 3/4), or auto")
    return Shard(int(index), int(count))
