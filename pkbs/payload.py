"""Job payloads: the zip `qsub` sends, its safe unpacking on the worker, and the
files a job created or changed (which the worker uploads as results).

Standard library only and cheap to import: it is on the `qsub` fast path, so
`zipfile`, `io` and friends are imported inside the functions that use them.

Archive conventions (Info-ZIP, what `zip -y` / `unzip` use):
- entries are sorted, directories first in each level, named relative with "/";
- the Unix mode sits in the high 16 bits of `external_attr` (file type + 0o777);
- a symlink is an entry of type S_IFLNK whose content is the link target;
- every timestamp is 1980-01-01 00:00 so the same tree gives the same bytes.

Names: spaces and any Unicode are fine; control characters (newline, tab, ...),
backslashes, drive letters, "." / ".." and empty components are refused, by the
builders and by `safe_unpack` alike, so whatever qsub builds the worker unpacks.
"""

from __future__ import annotations

import os

from pkbs.constants import MAX_PAYLOAD_BYTES
from pkbs.errors import InvalidPayload, PayloadTooLarge
from pkbs.pbsvalues import format_size

TYPE_CHECKING = False  # not `from typing import`: typing alone costs ~3 ms
if TYPE_CHECKING:
    import zipfile
    from collections.abc import Iterator

    StrPath = str | os.PathLike[str]

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "build_from_directory",
    "build_from_file",
    "build_from_script",
    "changed_files",
    "check_size",
    "safe_unpack",
    "snapshot",
]

# Limits of safe_unpack.
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_TOTAL_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_RATIO = 200
# Entries smaller than this are exempt from the ratio check (a 40 KiB file of
# blanks legitimately deflates 300:1; a bomb needs to be big to hurt).
RATIO_EXEMPT_BYTES = 64 * 1024
MAX_SYMLINK_TARGET = 4096

# Compression: level 1 first; when that lands just over the limit, level 6 once.
# Measured (CPython 3.11): Python source 66 MiB/s -> 3.3:1 at level 1, 24 MiB/s ->
# 4.0:1 at 6 (9: 7 MiB/s, 4.07:1); CSV floats 55 MiB/s 2.09:1 vs 10 MiB/s 2.32:1.
FAST_LEVEL = 1
SMALL_LEVEL = 6
# Level 6 never saved more than ~25% over level 1 on real payloads; beyond this
# factor a second pass is hopeless and building stops early.
RETRY_FACTOR = 1.5

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 256 * 1024
_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_MSDOS_DIR = 0x10


# --------------------------------------------------------------------------- sizes


def check_size(data: bytes, limit: int = MAX_PAYLOAD_BYTES) -> None:
    """Raise PayloadTooLarge when the zipped payload is over the limit."""
    if len(data) > limit:
        raise PayloadTooLarge(
            f"Job payload is {format_size(len(data), 'iec')} zipped ({len(data)} bytes), over the "
            f"{format_size(limit, 'iec')} limit; keep large inputs out of the job directory "
            "and fetch them from shared storage in the job"
        )


# --------------------------------------------------------------------------- names


def _name_problem(rel: str) -> str | None:
    """Why `rel` (a relative path with "/" separators) is not an acceptable name."""
    if not rel:
        return "empty name"
    if rel.startswith("/"):
        return "absolute path"
    if "\\" in rel:
        return "backslash in name"
    if rel[0].isascii() and rel[0].isalpha() and rel[1:2] == ":" and rel[2:3] in ("", "/"):
        return "drive letter in name"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "control character (newline, tab, ...) in name"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return f"{part or 'empty'!r} path component"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def _check_name(rel: str, what: str) -> None:
    problem = _name_problem(rel)
    if problem is not None:
        raise InvalidPayload(f"{what} {rel!r}: {problem}")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _symlink_escapes(rel: str, target: str) -> str | None:
    """Lexical check of a link `rel` -> `target`; the real check follows on disk."""
    import posixpath

    if not target:
        return "empty symlink target"
    if target.startswith("/") or "\\" in target or (len(target) >= 2 and target[1] == ":"):
        return f"symlink target {target!r} is absolute"
    if any(ord(c) < 32 or ord(c) == 127 for c in target):
        return "control character in symlink target"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined == ".." or joined.startswith("../"):
        return f"symlink target {target!r} points outside the payload"
    return None


# --------------------------------------------------------------------------- build


class _Entry:
    __slots__ = ("kind", "name", "mode", "source", "data")

    def __init__(
        self, kind: str, name: str, mode: int, source: str | None = None, data: bytes = b""
    ) -> None:
        self.kind = kind  # "dir" | "file" | "link"
        self.name = name  # relative, "/" separated, no trailing slash
        self.mode = mode & 0o777
        self.source = source  # file to read, for kind "file"
        self.data = data  # content, for links (target) and in-memory files


class _TooBig(Exception):
    pass


def _write_zip(entries: list[_Entry], level: int, stop_at: int | None) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for entry in entries:
            if entry.kind == "file":
                # Opening by name takes the archive's level and the fixed 1980 date;
                # the mode goes into the central directory, written at close.
                with zf.open(entry.name, "w") as out:
                    if entry.source is None:
                        out.write(entry.data)
                    else:
                        with open(entry.source, "rb") as src:
                            while chunk := src.read(_CHUNK):
                                out.write(chunk)
                                if stop_at is not None and buf.tell() > stop_at:
                                    raise _TooBig
                info = zf.getinfo(entry.name)
                info.create_system = 3
                info.external_attr = (_S_IFREG | entry.mode) << 16
            else:
                is_dir = entry.kind == "dir"
                info = zipfile.ZipInfo(entry.name + "/" if is_dir else entry.name, _FIXED_DATE)
                info.create_system = 3
                ftype = _S_IFDIR if is_dir else _S_IFLNK
                info.external_attr = ((ftype | entry.mode) << 16) | (_MSDOS_DIR if is_dir else 0)
                zf.writestr(info, entry.data, compress_type=zipfile.ZIP_STORED)
            if stop_at is not None and buf.tell() > stop_at:
                raise _TooBig
    return buf.getvalue()


def _build(entries: list[_Entry], what: str, limit: int | None) -> bytes:
    try:
        return _build_levels(entries, what, limit)
    except OSError as exc:
        raise InvalidPayload(f"cannot read {exc.filename!r}: {exc.strerror}") from exc


def _build_levels(entries: list[_Entry], what: str, limit: int | None) -> bytes:
    if limit is None:
        return _write_zip(entries, FAST_LEVEL, None)
    stop_at = int(limit * RETRY_FACTOR)
    try:
        data = _write_zip(entries, FAST_LEVEL, stop_at)
    except _TooBig:
        raise PayloadTooLarge(
            f"Job payload {what} compresses to more than {format_size(stop_at, 'iec')}, over the "
            f"{format_size(limit, 'iec')} limit; keep large inputs out of the job directory "
            "and fetch them from shared storage in the job"
        ) from None
    if len(data) > limit:
        data = _write_zip(entries, SMALL_LEVEL, None)
    check_size(data, limit)
    return data


def build_from_script(text: bytes, name: str, *, limit: int | None = MAX_PAYLOAD_BYTES) -> bytes:
    """A payload holding one executable file `name` (mode 0755): the stdin script."""
    if "/" in name:
        raise InvalidPayload(f"script name {name!r}: must not contain '/'")
    _check_name(name, "script name")
    return _build([_Entry("file", name, 0o755, data=text)], f"script {name!r}", limit)


def build_from_file(path: StrPath, *, limit: int | None = MAX_PAYLOAD_BYTES) -> bytes:
    """A payload holding the one file `path`, under its base name, mode kept."""
    import stat

    path = os.fspath(path)
    name = os.path.basename(path.rstrip(os.sep))
    _check_name(name, "file name")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidPayload(f"cannot read {path!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InvalidPayload(f"{path!r} is not a regular file")
    return _build([_Entry("file", name, st.st_mode, source=path)], repr(path), limit)


def _scan(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative name, path, lstat) for everything under root, depth first, sorted,
    each directory before its contents; symlinks are not followed."""
    with os.scandir(root) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        st = child.stat(follow_symlinks=False)
        yield child.name, child.path, st
        if child.is_dir(follow_symlinks=False):
            for rel, path, sub in _scan(child.path):
                yield f"{child.name}/{rel}", path, sub


def build_from_directory(path: StrPath, *, limit: int | None = MAX_PAYLOAD_BYTES) -> bytes:
    """A payload of the whole tree under `path`: directories, files with their
    modes, and symlinks that resolve inside the tree (absolute ones are stored
    relative). Anything else (a link out of the tree, a fifo, a socket, a device,
    an unreadable entry) is refused, never skipped."""
    import stat

    root = os.fspath(path)
    real_root = os.path.realpath(root)
    entries: list[_Entry] = []
    try:
        scanned = list(_scan(root))
    except OSError as exc:
        raise InvalidPayload(f"cannot read {exc.filename!r}: {exc.strerror}") from exc
    for rel, full, st in scanned:
        _check_name(rel, "file")
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entries.append(_Entry("dir", rel, mode))
        elif stat.S_ISREG(mode):
            entries.append(_Entry("file", rel, mode, source=full))
        elif stat.S_ISLNK(mode):
            target = os.readlink(full)
            real = os.path.realpath(full)
            if not _inside(real, real_root):
                raise InvalidPayload(
                    f"symlink {rel!r} -> {target!r} points outside {root!r}; "
                    "copy the file in or use an absolute path in the job"
                )
            if _symlink_escapes(rel, target) is not None:
                # Absolute, or a detour through "..": store the plain relative path.
                target = os.path.relpath(real, os.path.realpath(os.path.dirname(full)))
            entries.append(_Entry("link", rel, 0o777, data=target.encode("utf-8")))
        else:
            kind = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
            raise InvalidPayload(f"{rel!r} in {root!r} is a {kind}, not a file or directory")
    return _build(entries, f"directory {root!r}", limit)


# --------------------------------------------------------------------------- unpack


class _Plan:
    __slots__ = ("info", "rel", "kind", "perms", "target")

    def __init__(self, info: zipfile.ZipInfo, rel: str, kind: str, perms: int) -> None:
        self.info = info
        self.rel = rel
        self.kind = kind
        self.perms = perms
        self.target = ""


def _plan(
    zf: zipfile.ZipFile, max_entries: int, max_total_bytes: int, max_ratio: int
) -> list[_Plan]:
    """Validate every entry from the headers before anything is written."""
    import zipfile

    infos = zf.infolist()
    if not infos:
        raise InvalidPayload("payload archive is empty")
    if len(infos) > max_entries:
        raise InvalidPayload(f"payload has {len(infos)} entries, more than {max_entries}")
    plans: list[_Plan] = []
    seen: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        is_dir = name.endswith("/")
        rel = name[:-1] if is_dir else name
        _check_name(rel, "entry")
        if rel in seen:
            raise InvalidPayload(f"entry {rel!r}: duplicate name")
        seen.add(rel)
        if info.flag_bits & 0x1:
            raise InvalidPayload(f"entry {name!r}: encrypted entries are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidPayload(
                f"entry {name!r}: compression method {info.compress_type} is not supported"
            )
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        ftype = mode & _S_IFMT
        if ftype == _S_IFLNK and not is_dir:
            kind = "link"
        elif is_dir and ftype in (0, _S_IFDIR):
            kind = "dir"
        elif not is_dir and ftype in (0, _S_IFREG):
            kind = "file"
        else:
            raise InvalidPayload(f"entry {name!r}: unsupported file type {oct(ftype)}")
        perms = mode & 0o777 or (0o755 if kind == "dir" else 0o644)
        declared += info.file_size
        if declared > max_total_bytes:
            raise InvalidPayload(
                f"payload unpacks to more than {format_size(max_total_bytes, 'iec')} "
                f"(declared, at entry {name!r})"
            )
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > max_ratio * max(
            info.compress_size, 1
        ):
            raise InvalidPayload(
                f"entry {name!r}: compression ratio over {max_ratio}:1 "
                f"({info.file_size} bytes from {info.compress_size})"
            )
        plan = _Plan(info, rel, kind, perms)
        if kind == "link":
            if info.file_size > MAX_SYMLINK_TARGET:
                raise InvalidPayload(f"entry {name!r}: symlink target too long")
            try:
                plan.target = zf.read(info).decode("utf-8")
            except (UnicodeDecodeError, zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InvalidPayload(f"entry {name!r}: unreadable symlink target: {exc}") from exc
            problem = _symlink_escapes(rel, plan.target)
            if problem is not None:
                raise InvalidPayload(f"entry {name!r}: {problem}")
        plans.append(plan)
    not_dirs = {p.rel for p in plans if p.kind != "dir"}
    for p in plans:
        parts = p.rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in not_dirs:
                raise InvalidPayload(f"entry {p.rel!r} lies under {parent!r}, not a directory")
    return plans


class _Unpacker:
    def __init__(self, root: str, max_total_bytes: int, max_ratio: int) -> None:
        self.root = root
        self.max_total_bytes = max_total_bytes
        self.max_ratio = max_ratio
        self.created: list[str] = []  # for cleanup on failure, in creation order
        self.dir_modes: dict[str, int] = {}  # directories made -> final mode
        self.total = 0

    def mkdirs(self, rel: str) -> str:
        """Make the directories of `rel` under root, never through a symlink."""
        import stat

        cur = self.root
        for part in rel.split("/") if rel else []:
            cur = os.path.join(cur, part)
            try:
                os.mkdir(cur, 0o700)
                self.created.append(cur)
                self.dir_modes[cur] = 0o755  # implicit parents: like unzip
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(cur).st_mode):
                    raise InvalidPayload(
                        f"{rel!r}: {part!r} exists and is not a directory"
                    ) from None
        return cur

    def write_file(self, zf: zipfile.ZipFile, plan: _Plan, mtime_ns: int) -> None:
        parent = self.mkdirs(plan.rel.rpartition("/")[0])
        if not _inside(os.path.realpath(parent), self.root):
            raise InvalidPayload(f"entry {plan.rel!r} resolves outside the job directory")
        path = os.path.join(parent, plan.rel.rpartition("/")[2])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise InvalidPayload(f"entry {plan.rel!r}: exists already") from None
        self.created.append(path)
        written = 0
        ratio_cap = max(self.max_ratio * max(plan.info.compress_size, 1), RATIO_EXEMPT_BYTES)
        try:
            with zf.open(plan.info) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    self.total += len(chunk)
                    if self.total > self.max_total_bytes:
                        raise InvalidPayload(
                            f"entry {plan.rel!r}: payload unpacks to more than "
                            f"{format_size(self.max_total_bytes, 'iec')}"
                        )
                    if written > ratio_cap:
                        raise InvalidPayload(
                            f"entry {plan.rel!r}: compression ratio over {self.max_ratio}:1"
                        )
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            os.fchmod(fd, plan.perms)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def cleanup(self) -> None:
        for path in reversed(self.created):
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass


def safe_unpack(
    data: bytes,
    dest: StrPath,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> list[str]:
    """Unpack a payload into `dest` (created if missing; meant to be fresh) and
    return the entry names written, in archive order (directories end in "/").

    Every entry is checked before anything is written; sizes are counted again
    while inflating. Files are created with O_EXCL | O_NOFOLLOW, never through a
    symlink; symlinks are made last and must resolve inside `dest`. Modes are
    `external_attr & 0o777` (no setuid/setgid/sticky), directories keep owner
    rwx, and file mtimes are the archive's (so any change by the job shows in
    `changed_files`). On any error, what was written is removed again and
    InvalidPayload names the entry.
    """
    import calendar
    import io
    import zipfile
    import zlib

    if not data:
        raise InvalidPayload("payload is empty (0 bytes), not a zip archive")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise InvalidPayload(f"payload is not a valid zip archive: {exc}") from exc
    with zf:
        plans = _plan(zf, max_entries, max_total_bytes, max_ratio)
        os.makedirs(dest, exist_ok=True)
        root = os.path.realpath(dest)
        unpacker = _Unpacker(root, max_total_bytes, max_ratio)
        current = ""
        try:
            for plan in plans:
                current = plan.rel
                if plan.kind == "dir":
                    made = unpacker.mkdirs(plan.rel)
                    unpacker.dir_modes[made] = plan.perms | 0o700
                elif plan.kind == "file":
                    mtime = calendar.timegm((*plan.info.date_time, 0, 0, 0)) * 10**9
                    unpacker.write_file(zf, plan, mtime)
            # Symlinks last: no file above can have been written through one.
            links = [p for p in plans if p.kind == "link"]
            for plan in links:
                current = plan.rel
                parent = unpacker.mkdirs(plan.rel.rpartition("/")[0])
                path = os.path.join(parent, plan.rel.rpartition("/")[2])
                os.symlink(plan.target, path)
                unpacker.created.append(path)
            for plan in links:  # a chain of links may resolve out where each alone did not
                current = plan.rel
                if not _inside(os.path.realpath(os.path.join(root, plan.rel)), root):
                    raise InvalidPayload(
                        f"entry {plan.rel!r}: symlink -> {plan.target!r} resolves outside "
                        "the job directory"
                    )
            for path, perms in sorted(unpacker.dir_modes.items(), key=lambda d: -len(d[0])):
                os.chmod(path, perms)  # deepest first, after everything inside is written
        except InvalidPayload:
            unpacker.cleanup()
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as exc:
            unpacker.cleanup()
            raise InvalidPayload(
                f"entry {current!r}: corrupt data, or a header that lies about it: {exc}"
            ) from exc
        except OSError as exc:
            unpacker.cleanup()
            raise InvalidPayload(f"entry {current!r}: cannot unpack: {exc}") from exc
    return [p.info.filename for p in plans]


# --------------------------------------------------------------------------- results


def snapshot(directory: StrPath) -> dict[str, tuple[int, int]]:
    """Regular files under `directory` (symlinks are neither followed nor listed):
    relative "/" path -> (size, mtime_ns). Unreadable directories are skipped."""
    import stat

    found: dict[str, tuple[int, int]] = {}
    root = os.fspath(directory)

    def walk(path: str, prefix: str) -> None:
        try:
            with os.scandir(path) as it:
                children = list(it)
        except OSError:
            return
        for child in children:
            try:
                st = child.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = prefix + child.name
            if stat.S_ISREG(st.st_mode):
                found[rel] = (st.st_size, st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                walk(child.path, rel + "/")

    walk(root, "")
    return found


def changed_files(directory: StrPath, before: dict[str, tuple[int, int]]) -> list[str]:
    """Regular files created or modified (size or mtime) since `before`, sorted.

    Symlinks are never reported: a job must not get a worker to upload files
    from outside its directory. The uploader should still open with O_NOFOLLOW.
    """
    now = snapshot(directory)
    return sorted(rel for rel, sig in now.items() if before.get(rel) != sig)
