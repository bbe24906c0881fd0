"""Commands as BENCHMARKS.md prints them: what a reader can run from the repository root.

The measured commands hold this machine's absolute paths (the interpreter, the scratch
folders, the data and the repository as resolved). ``Shown`` rewrites them: ``python`` for
the interpreter, paths inside the repository relative to it, the data folder as it was given
on the command line, and a scratch folder that only links the dataset's own files (the
20-image set) as that dataset folder.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Shown:
    """How to print commands: ``repo`` the repository root (commands run from there), ``data``
    the data folder as given (``../shared/data``), ``aliases`` folder -> the words to print."""

    repo: Path
    data: Path
    aliases: dict[Path, str] = field(default_factory=dict)

    def path(self, value: str) -> str:
        """One argument: a path under the data folder or the repository made relative, else as is."""
        if value == sys.executable:
            return "python"
        path = Path(value)
        if not path.is_absolute() or not path.exists():
            return value
        resolved = path.resolve()
        for folder, words in self.aliases.items():
            if resolved == Path(folder).resolve():
                return words
        data = self.data.resolve()
        if resolved == data or data in resolved.parents:
            return str(self.data / resolved.relative_to(data))
        repo = self.repo.resolve()
        if repo in resolved.parents:
            return str(resolved.relative_to(repo))
        return value

    def with_alias(self, folder: Path, words: str) -> "Shown":
        """The same rules, and ``folder`` printed as ``words``."""
        return Shown(self.repo, self.data, {**self.aliases, Path(folder): words})

    def command(self, argv: Sequence[str]) -> str:
        """``argv`` as one shell line with every argument rewritten by ``path``."""
        return shlex.join(self.path(str(a)) for a in argv)


def relative_to_repo(data: Path, repo: Path) -> Path:
    """``data`` as it can be written in a command run from ``repo``: kept when relative (the
    Makefile's ``../shared/data``), else relative to ``repo`` when that needs no more than two
    ``..`` steps, else absolute (a reader's own data lives elsewhere anyway)."""
    if not data.is_absolute():
        return data
    relative = Path(os.path.relpath(data, repo))
    return relative if relative.parts[:3].count("..") < 3 else data
