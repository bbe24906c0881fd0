"""Input discovery and output naming: order, hidden files, symlinks, collisions, never outside OUT."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselcli.io.discover import (
    OutputPaths, Source, UnsafeNameError, assign_names, discover, is_image_name, walk_images,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_searched_recursively_in_sorted_order_skipping_hidden_names(tmp_path: Path) -> None:
    for name in ["b.png", "a.TIF", "sub/c.jpeg", "sub/deeper/d.WebP", ".hidden.png", ".cache/e.png",
                 "notes.txt", "sub/f.gif", "z.Bmp"]:
        touch(tmp_path / name)
    rels = [s.rel for s in discover([tmp_path])]
    assert rels == ["a.TIF", "b.png", "sub/c.jpeg", "sub/deeper/d.WebP", "sub/f.gif", "z.Bmp"]
    assert rels == [s.rel for s in discover([tmp_path])]  # deterministic


def test_files_given_directly_are_taken_once_and_keep_their_name(tmp_path: Path) -> None:
    a = touch(tmp_path / "x" / "a.png")
    b = touch(tmp_path / "y" / "b.jpg")
    sources = discover([b, a, a, tmp_path / "x"])
    assert [(s.path, s.rel) for s in sources] == [(b, "b.jpg"), (a, "a.png")]


def test_a_symlink_loop_ends_and_linked_folders_are_visited_once(tmp_path: Path) -> None:
    touch(tmp_path / "scans" / "one.png")
    touch(tmp_path / "scans" / "inner" / "two.png")
    os.symlink(tmp_path / "scans", tmp_path / "scans" / "inner" / "loop")
    os.symlink(tmp_path / "scans" / "inner" / "two.png", tmp_path / "scans" / "link.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "scans" / "broken.png")
    rels = [s.rel for s in discover([tmp_path / "scans"])]
    assert rels == ["broken.png", "inner/two.png", "link.png", "one.png"]


def test_the_output_folder_is_never_searched_for_inputs(tmp_path: Path) -> None:
    touch(tmp_path / "a.png")
    touch(tmp_path / "out" / "masks" / "a.png")
    assert [p.name for p in walk_images(tmp_path, exclude=(tmp_path / "out").resolve())] == ["a.png"]


def test_image_extensions_are_recognised_in_any_case() -> None:
    assert all(is_image_name(n) for n in ["a.PNG", "b.Jpg", "c.jpeg", "d.TIFF", "e.tif", "f.bmp", "g.GIF",
                                           "h.ppm", "i.pgm", "j.webp"])
    assert not any(is_image_name(n) for n in ["a.txt", "b", "c.png.bak", ".png.x"])


def src(rel: str, root: str = "/in") -> Source:
    return Source(Path(root) / rel, Path(root), rel)


def test_same_stem_in_one_folder_keeps_the_extensions_apart() -> None:
    items = assign_names([src("a.tif"), src("a.png"), src("b.png")])
    assert [i.key for i in items] == ["a.tif", "a.png", "b"]
    assert [i.name for i in items] == ["a.tif", "a.png", "b.png"]


def test_same_relative_path_under_two_roots_gets_a_number() -> None:
    items = assign_names([src("x/img.png", "/clinicA"), src("x/img.png", "/clinicB"), src("x/IMG.png", "/clinicC")])
    assert [i.name for i in items] == ["x/img.png", "x/img~2.png", "x/IMG~3.png"]
    assert len({i.key.casefold() for i in items}) == 3


def test_a_renamed_key_never_takes_an_untouched_one() -> None:
    # a.tif and a.png both want 'a', so they become 'a.tif' / 'a.png'; but 'a.tif.jpg' owns 'a.tif'.
    items = assign_names([src("a.tif"), src("a.png"), src("a.tif.jpg")])
    keys = [i.key for i in items]
    assert keys[2] == "a.tif"
    assert len({k.casefold() for k in keys}) == 3


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
rel_paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/".join(parts))
exts = st.sampled_from([".png", ".PNG", ".tif", ".jpg", ".jpeg", ".gif", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(rel_paths, exts, st.sampled_from(["/r1", "/r2", "/r3"])), min_size=1, max_size=12))
def test_output_names_are_unique_and_inside_out_whatever_the_input_names(entries) -> None:
    sources = [src(rel + ext, root) for rel, ext, root in entries]
    items = assign_names(sources)
    assert len({i.name.casefold() for i in items}) == len(items)
    assert len({i.key.casefold() for i in items}) == len(items)
    paths = OutputPaths(Path("/out"))
    for item in items:
        parts = PurePosixPath(item.key).parts
        if any(p in (".", "..") for p in parts) or not parts:
            with pytest.raises(UnsafeNameError):
                paths.mask(item.key)
            continue
        for made in (paths.mask(item.key), paths.overlay(item.key), paths.probability(item.key)):
            normal = Path(os.path.normpath(made))
            assert normal.parts[:3] in (("/", "out", "masks"), ("/", "out", "overlays"), ("/", "out", "probabilities"))
            assert len(normal.parts) > 3


@pytest.mark.parametrize("key", ["../evil", "a/../../evil", "/etc/passwd", "..", ".", ""])
def test_keys_that_would_leave_out_are_refused(key: str) -> None:
    with pytest.raises(UnsafeNameError):
        OutputPaths(Path("/out")).mask(key)


def test_discovered_names_can_never_hold_dot_dot(tmp_path: Path) -> None:
    touch(tmp_path / "..png")  # a real file whose name starts with dots: hidden, so skipped
    touch(tmp_path / "a..b.png")
    items = assign_names(discover([tmp_path]))
    assert [i.key for i in items] == ["a..b"]
    assert OutputPaths(tmp_path / "out").mask(items[0].key) == tmp_path / "out" / "masks" / "a..b.png"


# File names as the file system gives them: any bytes but '/' and NUL, decoded the way Python
# does (bytes that are not UTF-8 become lone surrogates), never '.' or '..'.
raw_parts = st.binary(min_size=1, max_size=8).filter(lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b".."))
raw_rel_paths = st.lists(raw_parts.map(os.fsdecode), min_size=1, max_size=3).map("/".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(raw_rel_paths, st.sampled_from(["/r1", "/r2"])), min_size=1, max_size=10))
def test_any_file_names_give_distinct_one_line_utf8_names_and_distinct_mask_paths_inside_out(entries) -> None:
    items = assign_names([src(rel, root) for rel, root in entries])
    for item in items:
        item.name.encode("utf-8")  # a UTF-8 CSV can hold it
        assert not any(ord(c) < 32 or ord(c) == 127 for c in item.name)  # one line, no terminal escapes
    assert len({i.name.casefold() for i in items}) == len(items)
    paths = OutputPaths(Path("/out"))
    masks = [os.path.normpath(paths.mask(i.key)).casefold() for i in items]  # never UnsafeNameError
    assert len(set(masks)) == len(items)  # no two images share a mask, even on a case-insensitive disk
    assert all(m.startswith("/out/masks/") for m in masks)


def test_names_that_are_not_utf8_or_hold_control_characters_are_escaped() -> None:
    raw = [b"caf\xe9.tif", b"line\nbreak.png", b"bell\x07.png", "ünï näme.png".encode()]
    items = assign_names([src(os.fsdecode(r)) for r in raw])
    assert [i.name for i in items] == ["caf\\xe9.tif", "line\\x0abreak.png", "bell\\x07.png", "ünï näme.png"]
    assert [i.key for i in items] == ["caf\\xe9", "line\\x0abreak", "bell\\x07", "ünï näme"]
    dots = assign_names([src("..png"), src("...png")])
    assert [i.key for i in dots] == ["..png", "...png"]  # not '.' and '..'
