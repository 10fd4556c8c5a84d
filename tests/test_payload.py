"""pkbs.payload: building payload zips, unpacking hostile ones, spotting results."""

from __future__ import annotations

import io
import os
import random
import stat
import struct
import subprocess
import sys
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pkbs import payload
from pkbs.constants import MAX_PAYLOAD_BYTES
from pkbs.errors import InvalidPayload, PayloadTooLarge

# ----------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """rel -> (kind, mode & 0o7777, content or link target), symlinks not followed."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def make_zip(*entries: tuple[str, bytes, int], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Entries of (name, content, unix mode with file type); duplicates allowed."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.external_attr = mode << 16
                info.compress_type = method
                zf.writestr(info, data)
    return buf.getvalue()


def patch_sizes(data: bytes, name: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size of `name` in the local and central headers."""
    raw = bytearray(data)
    pos = 0
    while (pos := raw.find(b"PK\x03\x04", pos)) >= 0:
        (nlen,) = struct.unpack_from("<H", raw, pos + 26)
        if raw[pos + 30 : pos + 30 + nlen] == name:
            struct.pack_into("<I", raw, pos + 22, declared)
        pos += 4
    pos = 0
    while (pos := raw.find(b"PK\x01\x02", pos)) >= 0:
        (nlen,) = struct.unpack_from("<H", raw, pos + 28)
        if raw[pos + 46 : pos + 46 + nlen] == name:
            struct.pack_into("<I", raw, pos + 24, declared)
        pos += 4
    return bytes(raw)


def corrupt(data: bytes, name: bytes) -> bytes:
    """Overwrite the middle of the compressed data of `name`."""
    raw = bytearray(data)
    pos = raw.find(b"PK\x03\x04" + raw[4:26] + struct.pack("<H", len(name)))
    (csize,) = struct.unpack_from("<I", raw, pos + 18)
    start = pos + 30 + len(name) + csize // 3
    raw[start : start + 16] = b"\xff" * 16
    return bytes(raw)


REG = stat.S_IFREG | 0o644
LNK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


@pytest.fixture
def outer(tmp_path: Path) -> Path:
    """A directory that holds only `dest`: whatever else appears in it escaped."""
    (tmp_path / "outer").mkdir()
    return tmp_path / "outer"


# ----------------------------------------------------------------------------- builders


def test_script_round_trip(tmp_path: Path) -> None:
    data = payload.build_from_script(b"#!/bin/sh\necho hi\n", "STDIN")
    assert payload.safe_unpack(data, tmp_path / "d") == ["STDIN"]
    assert tree(tmp_path / "d") == {"STDIN": ("file", 0o755, b"#!/bin/sh\necho hi\n")}


@pytest.mark.parametrize("name", ["a/b", "..", "", "x\ny"])
def test_script_name_refused(name: str) -> None:
    with pytest.raises(InvalidPayload, match="script name"):
        payload.build_from_script(b"true\n", name)


@pytest.mark.parametrize("mode", [0o755, 0o700, 0o550])
def test_file_round_trip_keeps_mode(tmp_path: Path, mode: int) -> None:
    src = tmp_path / "job script.sh"
    src.write_bytes(b"#!/bin/sh\nexit 0\n")
    src.chmod(mode)
    data = payload.build_from_file(src)
    assert payload.safe_unpack(data, tmp_path / "d") == ["job script.sh"]
    assert tree(tmp_path / "d") == {"job script.sh": ("file", mode, b"#!/bin/sh\nexit 0\n")}


def make_project(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run.sh").write_bytes(b"#!/bin/sh\necho run\n")
    (root / "bin" / "run.sh").chmod(0o755)
    (root / "data").mkdir()
    (root / "data" / "in put é.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (root / "data" / "ro.txt").write_bytes(b"read only")
    (root / "data" / "ro.txt").chmod(0o444)
    (root / "empty").mkdir(mode=0o750)
    (root / "empty").chmod(0o750)
    (root / "日本").mkdir()
    (root / "日本" / "x").write_bytes(b"\0" * 1000)
    (root / "latest").symlink_to("data")
    (root / "bin" / "input").symlink_to("../data/in put é.csv")
    (root / "abs").symlink_to(root / "data" / "ro.txt")  # absolute but inside
    (root / "dangling").symlink_to("not-yet")  # inside, made by the job later


def test_directory_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    make_project(src)
    data = payload.build_from_directory(src)
    written = payload.safe_unpack(data, tmp_path / "d")
    assert "bin/run.sh" in written and "empty/" in written
    got, want = tree(tmp_path / "d"), tree(src)
    assert got.pop("abs") == ("link", 0, "data/ro.txt")  # stored relative
    want.pop("abs")
    assert got == want
    assert os.access(tmp_path / "d" / "bin" / "run.sh", os.X_OK)
    result = subprocess.run([tmp_path / "d" / "bin" / "run.sh"], capture_output=True, check=True)
    assert result.stdout == b"run\n"
    assert (tmp_path / "d" / "bin" / "input").read_text(encoding="utf-8") == "a,b\n1,2\n"


def test_directory_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    make_project(a)
    make_project(b)
    os.utime(b / "bin" / "run.sh", (1e9, 1e9))
    first = payload.build_from_directory(a)
    assert payload.build_from_directory(a) == first
    assert payload.build_from_directory(b) == first
    (b / "bin" / "run.sh").chmod(0o644)
    assert payload.build_from_directory(b) != first


def test_directory_symlink_out_refused(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "ok").write_text("x")
    (tmp_path / "secret").write_text("s")
    (src / "leak").symlink_to("../secret")
    with pytest.raises(InvalidPayload, match="symlink 'leak'"):
        payload.build_from_directory(src)


def test_directory_symlink_detour_refused(tmp_path: Path) -> None:
    # Each link looks inside on its own; together "x" lands outside.
    src = tmp_path / "proj"
    src.mkdir()
    (src / "d").symlink_to(".")
    (src / "x").symlink_to("d/../secret")
    with pytest.raises(InvalidPayload, match="symlink 'x'"):
        payload.build_from_directory(src)


def test_directory_absolute_symlink_out_refused(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidPayload, match="points outside"):
        payload.build_from_directory(src)


def test_directory_fifo_refused(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(InvalidPayload, match="'pipe'.*fifo"):
        payload.build_from_directory(src)


@pytest.mark.parametrize("bad", ["new\nline", "tab\there", "back\\slash"])
def test_directory_odd_names_refused(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / bad).write_text("x")
    with pytest.raises(InvalidPayload, match="sub/"):
        payload.build_from_directory(src)


def test_directory_unreadable_file_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    src = tmp_path / "proj"
    src.mkdir()
    (src / "locked").write_text("x")
    (src / "locked").chmod(0)
    with pytest.raises(InvalidPayload, match="locked"):
        payload.build_from_directory(src)


def test_odd_but_legal_names_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    names = [
        "with space",
        " lead",
        "trail ",
        "ünïcødé",
        "emoji 🐍",
        "a:b",
        "ab:cd",
        "#hash",
        "-dash",
    ]
    src.mkdir()
    for n in names:
        (src / n).write_text(n, encoding="utf-8")
    payload.safe_unpack(payload.build_from_directory(src), tmp_path / "d")
    assert tree(tmp_path / "d") == tree(src)


# ----------------------------------------------------------------------------- size


def test_check_size_message() -> None:
    payload.check_size(b"x" * MAX_PAYLOAD_BYTES)
    with pytest.raises(PayloadTooLarge) as err:
        payload.check_size(b"x" * (3 * MAX_PAYLOAD_BYTES // 2))
    assert "1.5 MiB" in str(err.value) and "1.0 MiB limit" in str(err.value)
    with pytest.raises(PayloadTooLarge, match="2.0 KiB zipped .*1.0 KiB limit"):
        payload.check_size(b"x" * 2048, limit=1024)
    assert err.value.http_status == 413


def test_big_directory_stops_early(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "noise.bin").write_bytes(random.Random(1).randbytes(3 * MAX_PAYLOAD_BYTES))
    (src / "zzz").write_bytes(b"never read")
    with pytest.raises(PayloadTooLarge, match="more than 1.5 MiB"):
        payload.build_from_directory(src)


def words(n: int, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    vocab = ["".join(rnd.choices("abcdefghijklmnop", k=rnd.randint(2, 9))) for _ in range(3000)]
    return " ".join(rnd.choices(vocab, k=n)).encode()


def test_tighter_level_used_when_fast_one_is_over_limit(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "text").write_bytes(words(60_000))
    fast = payload.build_from_directory(src, limit=None)
    small = payload._write_zip(
        [payload._Entry("file", "text", 0o644, source=str(src / "text"))],
        payload.SMALL_LEVEL,
        None,
    )
    assert len(small) < len(fast)
    limit = (len(small) + len(fast)) // 2
    data = payload.build_from_directory(src, limit=limit)
    assert len(data) == len(small) <= limit
    assert payload.build_from_directory(src, limit=limit) == data  # still deterministic
    with pytest.raises(PayloadTooLarge):
        payload.build_from_directory(src, limit=len(small) - 1)


def test_import_is_light() -> None:
    code = (
        "import sys; b = set(sys.modules); import pkbs.payload; print(sorted(set(sys.modules) - b))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = ["pkbs", "pkbs.constants", "pkbs.errors", "pkbs.frozen", "pkbs.payload"]
    assert out.stdout.strip() == str([*expected, "pkbs.pbsvalues"])


# ----------------------------------------------------------------------------- hostile zips

EVIL_ABS = f"/tmp/pkbs-evil-{uuid.uuid4().hex}"
Case = Callable[[], tuple[bytes, dict[str, int]]]


def _case(data: bytes, **limits: int) -> Case:
    return lambda: (data, limits)


def _zeros_bomb() -> tuple[bytes, dict[str, int]]:
    return make_zip(("bomb", b"\0" * (20 * 1024 * 1024), REG)), {}


def _declared_bomb() -> tuple[bytes, dict[str, int]]:
    data = make_zip(("a", b"x" * 100, REG), ("b", b"y" * 100, REG))
    return patch_sizes(data, b"b", 600 * 1024 * 1024), {}


def _lying_small(max_ratio: int) -> Case:
    def build() -> tuple[bytes, dict[str, int]]:
        # Declared 1000 bytes, really 4 MiB: must never write more than declared.
        data = make_zip(("ok", b"fine", REG), ("liar", words(700_000), REG))
        return patch_sizes(data, b"liar", 1000), {"max_ratio": max_ratio}

    return build


def _too_many(n: int, **limits: int) -> Case:
    return lambda: (make_zip(*((f"f{i}", b"", REG) for i in range(n))), limits)


HOSTILE: dict[str, Case] = {
    "zip slip ../x": _case(make_zip(("ok", b"1", REG), ("../x", b"evil", REG))),
    "zip slip a/../../x": _case(make_zip(("a/../../x", b"evil", REG))),
    "absolute /tmp/x": _case(make_zip((EVIL_ABS, b"evil", REG))),
    "drive letter": _case(make_zip(("C:/x", b"evil", REG))),
    "backslashes": _case(make_zip(("..\\..\\x", b"evil", REG))),
    "dot component": _case(make_zip(("./x", b"evil", REG))),
    "empty component": _case(make_zip(("a//x", b"evil", REG))),
    "newline in name": _case(make_zip(("a\nb", b"x", REG))),
    "symlink out": _case(make_zip(("ok", b"1", REG), ("l", b"../..", LNK))),
    "symlink absolute": _case(make_zip(("l", b"/etc/passwd", LNK))),
    "symlink then write through it": _case(
        make_zip(("l", b"sub", LNK), ("sub/", b"", DIR), ("l/x", b"evil", REG))
    ),
    "symlink to dir then file below": _case(make_zip(("l", b".", LNK), ("l/x", b"evil", REG))),
    "symlink chain out": _case(make_zip(("d", b".", LNK), ("x", b"d/../escaped", LNK))),
    "duplicate file": _case(make_zip(("a", b"1", REG), ("a", b"2", REG))),
    "file and dir same name": _case(make_zip(("a/", b"", DIR), ("a", b"2", REG))),
    "file under a file": _case(make_zip(("a", b"1", REG), ("a/b", b"2", REG))),
    "fifo entry": _case(make_zip(("p", b"", stat.S_IFIFO | 0o644))),
    "device entry": _case(make_zip(("dev", b"", stat.S_IFCHR | 0o644))),
    "too many entries (default cap)": _too_many(payload.DEFAULT_MAX_ENTRIES + 1),
    "too many entries (cap 10)": _too_many(11, max_entries=10),
    "bomb by ratio": _zeros_bomb,
    "bomb by declared size": _declared_bomb,
    "declared over a small cap": _case(
        make_zip(("r", random.Random(2).randbytes(300_000), REG)), max_total_bytes=200_000
    ),
    "lying header": _lying_small(payload.DEFAULT_MAX_RATIO),
    "lying header, no ratio cap": _lying_small(10**9),
    "not a zip": _case(b"#!/bin/sh\necho this is a script, not a zip\n"),
    "empty bytes": _case(b""),
    "truncated zip": _case(make_zip(("a", b"x" * 5000, REG))[:-30]),
    "corrupt data": lambda: (corrupt(make_zip(("b", words(3000), REG)), b"b"), {}),
    "empty archive": _case(make_zip()),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_zip_refused(outer: Path, name: str) -> None:
    data, limits = HOSTILE[name]()
    dest = outer / "dest"
    with pytest.raises(InvalidPayload) as err:
        payload.safe_unpack(data, dest, **limits)
    assert str(err.value)
    assert [p.name for p in outer.iterdir()] in ([], ["dest"]), "wrote beside dest"
    assert not dest.exists() or list(dest.iterdir()) == [], "left a half-unpacked job"
    assert not os.path.lexists(EVIL_ABS)
    assert not (outer.parent / "x").exists() and not (outer.parent / "escaped").exists()


def test_hostile_messages_name_the_entry(outer: Path) -> None:
    cases = {
        "../x": make_zip(("../x", b"", REG)),
        "l": make_zip(("l", b"/etc/passwd", LNK)),
        "x": make_zip(("d", b".", LNK), ("x", b"d/../escaped", LNK)),
        "bomb": _zeros_bomb()[0],
        "liar": _lying_small(10**9)()[0],
    }
    for entry, data in cases.items():
        with pytest.raises(InvalidPayload, match=f"'{entry}'"):
            payload.safe_unpack(data, outer / "dest", max_ratio=10**9 if entry == "liar" else 200)


def test_streaming_counts_do_not_trust_headers(outer: Path) -> None:
    # zipfile itself stops at the declared size; the unpacker counts on its own
    # too, so feed it entries whose headers understate what really comes out.
    data = make_zip(("a", words(50_000), REG), ("b", b"\0" * 300_000, REG))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        dest = outer / "dest"
        dest.mkdir()
        info_a, info_b = zf.infolist()
        unpacker = payload._Unpacker(str(dest), max_total_bytes=10_000, max_ratio=200)
        with pytest.raises(InvalidPayload, match="'a': payload unpacks to more than"):
            unpacker.write_file(zf, payload._Plan(info_a, "a", "file", 0o644), 0)
        unpacker = payload._Unpacker(str(dest), max_total_bytes=10**9, max_ratio=1)
        with pytest.raises(InvalidPayload, match="'b': compression ratio"):
            unpacker.write_file(zf, payload._Plan(info_b, "b", "file", 0o644), 0)


def test_setuid_and_sticky_bits_dropped(tmp_path: Path) -> None:
    data = make_zip(
        ("suid", b"#!/bin/sh\n", stat.S_IFREG | 0o6755),
        ("sticky/", b"", stat.S_IFDIR | 0o1777),
    )
    payload.safe_unpack(data, tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d" / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "sticky").stat().st_mode) == 0o777


def test_foreign_zip_without_modes_and_stored(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # like a Windows zip tool
        info = zipfile.ZipInfo("dir/a.txt")
        info.create_system = 0
        zf.writestr(info, b"hello")
    assert payload.safe_unpack(buf.getvalue(), tmp_path / "d") == ["dir/a.txt"]
    assert tree(tmp_path / "d") == {
        "dir": ("dir", 0o755, b""),
        "dir/a.txt": ("file", 0o644, b"hello"),
    }


def test_small_redundant_file_is_not_a_bomb(tmp_path: Path) -> None:
    data = make_zip(("blank", b" " * 60_000, REG))  # ~700:1, but tiny
    assert payload.safe_unpack(data, tmp_path / "d") == ["blank"]


def test_existing_file_in_dest_is_not_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "a").write_text("mine")
    with pytest.raises(InvalidPayload, match="'a'"):
        payload.safe_unpack(make_zip(("a", b"theirs", REG)), dest)
    assert (dest / "a").read_text() == "mine"


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (tmp_path / "target").mkdir()
    (dest / "sub").symlink_to(tmp_path / "target")
    with pytest.raises(InvalidPayload, match="not a directory"):
        payload.safe_unpack(make_zip(("sub/x", b"evil", REG)), dest)
    assert list((tmp_path / "target").iterdir()) == []


# ----------------------------------------------------------------------------- results


def test_changed_files(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    make_project(src)
    job = tmp_path / "job"
    payload.safe_unpack(payload.build_from_directory(src), job)
    before = payload.snapshot(job)
    assert "bin/run.sh" in before and "latest" not in before  # links are not listed
    assert payload.changed_files(job, before) == []
    (job / "bin" / "run.sh").write_bytes(b"#!/bin/sh\necho RUN\n")  # same size, new mtime
    (job / "out").mkdir()
    (job / "out" / "result 1.txt").write_text("42")
    (job / "job.o").write_text("")
    (job / "stolen").symlink_to("/etc/passwd")
    (job / "latest" / "new-through-link.txt").write_text("via link")  # really data/...
    (job / "data" / "ro.txt").chmod(0o644)  # mode only: not a content change
    assert payload.changed_files(job, before) == [
        "bin/run.sh",
        "data/new-through-link.txt",
        "job.o",
        "out/result 1.txt",
    ]


def test_unpacked_mtimes_come_from_the_archive(tmp_path: Path) -> None:
    payload.safe_unpack(payload.build_from_script(b"x", "s"), tmp_path / "d")
    assert (tmp_path / "d" / "s").stat().st_mtime == 315532800  # 1980-01-01 UTC


def test_file_vanishing_while_building_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidPayload, match="cannot read .*gone"):
        payload.build_from_file(tmp_path / "gone")
    src = tmp_path / "proj"
    src.mkdir()
    (src / "dangling-dir-entry").mkdir()
    entries = [payload._Entry("file", "x", 0o644, source=str(src / "gone"))]
    with pytest.raises(InvalidPayload, match="cannot read .*gone"):
        payload._build(entries, "test", None)
