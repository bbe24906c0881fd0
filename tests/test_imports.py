"""The package's import graph: no module imports one that imports it back, even inside a function.

Function-level imports are how optional backends stay lazy; they are counted too, because a
cycle hidden inside a function is still two modules that cannot be understood one at a time.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vesselcli", "train", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Modules of this project that ``path`` (module ``name``) imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return trail + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, trail + [nxt]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    # A package's __init__ importing its own submodules (re-exports) is not a cycle worth
    # breaking: leave out edges from a submodule up to its own parent package.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    cycles = {" -> ".join(c) for name in graph if (c := _cycle_from(graph, name))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
    assert "vesselcli.export.onnx_export" in graph and "vesselcli.export.tensorrt_engine" in graph  # the graph was read


def test_segment_imports_neither_the_other_commands_nor_what_only_they_need() -> None:
    import subprocess
    import sys

    code = ("import sys; from vesselcli.cli import main; main(['segment', '--help'], standalone_mode=False); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('vesselcli.cli.') "
            "or m in ('importlib.metadata', 'skimage', 'scipy', 'torch', 'pydicom', 'highdicom', 'ray', "
            "'vesselcli.run.ray_data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines()[-1].split() == ["vesselcli.cli.console", "vesselcli.cli.params", "vesselcli.cli.segment"]
    assert "Usage:" in out  # the command ran


def test_a_quiet_segment_run_imports_no_rich_scikit_image_or_scipy(tmp_path: Path) -> None:
    import subprocess
    import sys

    from segment_fakes import write_fundus

    image = write_fundus(tmp_path / "in" / "a.png", 120, 130)
    code = ("import sys; from vesselcli.cli import main; "
            f"main(['segment', {str(image)!r}, '--out', {str(tmp_path / 'out')!r}, '-q'], standalone_mode=False); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'skimage', 'scipy', 'torch'})) or '-')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "masks" / "a.png").is_file()
    assert done.stdout.splitlines()[-1] == "-"


def test_the_cli_keeps_numpy_from_starting_a_blas_thread_pool_unless_asked() -> None:
    import os
    import subprocess
    import sys

    code = "import os, vesselcli.cli, numpy; print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    assert out.stdout.strip() == "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**env, "OPENBLAS_NUM_THREADS": "3"})
    assert out.stdout.strip() == "3"  # the user's choice stands
