"""The sandbox's file system: a root that holds only what running the worker's interpreter needs.

Loaded by path in the zygote (like ``codec.py`` and ``audit.py``: the worker runs without
site-packages), which calls :func:`plan` and then :func:`build` once, after importing everything
it preloads and before it forks any worker. The new root is a small read-only tmpfs holding, at
their host paths, exactly:

* copies of the interpreter and of every shared library it and its extension modules need (read
  from their ELF headers here, on the trusted side, as ``ldd`` would list them) and of
  ``/etc/ld.so.cache`` (copies, not mounts: each sample's mount namespace copies every mount);
* read-only bind mounts of the directories on the interpreter's ``sys.path`` (the standard
  library and ``lib-dynload``), with any ``site-packages``/``dist-packages`` inside them masked
  by an empty tmpfs, and of ``/dev/null``, ``/dev/zero``, ``/dev/urandom`` and ``/dev/random``;
* empty ``/tmp`` and ``/proc`` mount points (each sample gets a fresh tmpfs as ``/tmp``, its cwd,
  and a /proc of its own PID namespace), and the host's /proc at :data:`HOST_PROC`, only so that
  a user namespace may mount a fresh /proc (the kernel allows that only where a full /proc is
  already visible); each sample unmounts it before any candidate code runs.

Symbolic links met on the way (``/lib -> usr/lib``, ``libz.so.1 -> libz.so.1.2.13``) are
recreated, so paths resolve as on the host. Nothing else exists: no $HOME, caches, project
checkout, benchmark data, scorer site-packages or host /tmp, so no door that opens files (open,
readline, sqlite3, mmap, a subprocess...) finds anything to read.
"""

from __future__ import annotations

import glob
import os
import struct
import sys

DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
HOST_PROC = "/.host-proc"
LD_CACHE = "/etc/ld.so.cache"
DEFAULT_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                    "/lib", "/usr/lib", "/usr/local/lib")
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 1, 2, 4, 8, 4096
MS_REC, MS_PRIVATE, MNT_DETACH = 1 << 14, 1 << 18, 2


# ------------------------------------------------------------------ what to mount (trusted side)


def _elf_needs(path: str) -> tuple[str | None, list[str], list[str]]:
    """(PT_INTERP, DT_NEEDED names, DT_RPATH + DT_RUNPATH entries) of a 64-bit little-endian
    ELF file; nothing for anything else."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None, [], []
    if data[:6] != b"\x7fELF\x02\x01":
        return None, [], []
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic, interp = [], None, None
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data,
                                                                  phoff + i * phentsize)
        if p_type == 1:
            loads.append((vaddr, filesz, offset))
        elif p_type == 2:
            dynamic = (offset, filesz)
        elif p_type == 3:
            interp = data[offset:offset + filesz].split(b"\0")[0].decode()
    if dynamic is None:
        return interp, [], []
    entries = [struct.unpack_from("<qQ", data, dynamic[0] + i)
               for i in range(0, dynamic[1] - 15, 16)]
    strtab = next((v for tag, v in entries if tag == 5), None)
    base = next((off + strtab - vaddr for vaddr, size, off in loads
                 if strtab is not None and vaddr <= strtab < vaddr + size), None)
    if base is None:
        return interp, [], []

    def string(at: int) -> str:
        return data[base + at:data.index(b"\0", base + at)].decode("utf-8", "replace")

    needed = [string(v) for tag, v in entries if tag == 1]
    paths = [p for tag, v in entries if tag in (15, 29) for p in string(v).split(":") if p]
    return interp, needed, paths


def _lib_dirs() -> list[str]:
    """The loader's search directories: /etc/ld.so.conf (and its includes), then defaults."""
    found: list[str] = []

    def read(conf: str, depth: int = 0) -> None:
        try:
            lines = open(conf).read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#")[0].strip()
            if line.startswith("include ") and depth < 4:
                for path in sorted(glob.glob(line.split(None, 1)[1])):
                    read(path, depth + 1)
            elif line.startswith("/"):
                found.append(line)

    read("/etc/ld.so.conf")
    return list(dict.fromkeys(found + list(DEFAULT_LIB_DIRS)))


def _libraries(roots: list[str]) -> list[str]:
    """`roots` and every shared library they load, transitively (the loader's lookup order:
    RPATH/RUNPATH with $ORIGIN, then the ld.so.conf directories)."""
    dirs, seen, todo = _lib_dirs(), set(), list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        interp, needed, rpaths = _elf_needs(path)
        origin = os.path.dirname(os.path.realpath(path))
        search = [p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for p in rpaths]
        todo += [interp] if interp else []
        for name in needed:
            if "/" in name:
                todo.append(name)
                continue
            hit = next((os.path.join(d, name) for d in search + dirs
                        if os.path.isfile(os.path.join(d, name))), None)
            if hit is not None:
                todo.append(hit)
    return sorted(seen)


def plan() -> dict:
    """What this interpreter needs, as plain lists: ``dirs`` and ``files`` to bind read-only,
    ``masks`` (site-packages inside them) to cover with an empty tmpfs."""
    dirs, zips, masks = [], [], []
    for entry in sys.path:
        if not entry or not os.path.isabs(entry) or not os.path.exists(entry) or \
                "/site-packages" in entry or "/dist-packages" in entry:
            continue
        if os.path.isdir(entry):
            dirs.append(os.path.normpath(entry))
        else:
            zips.append(entry)
    dirs = [d for d in dict.fromkeys(dirs)
            if not any(d.startswith(o + "/") for o in dirs if o != d)]
    extensions = []
    for directory in dirs:
        for parent, subdirs, names in os.walk(directory):
            for name in [n for n in subdirs if n in ("site-packages", "dist-packages")]:
                masks.append(os.path.join(parent, name))
                subdirs.remove(name)  # never listed, never mounted: hidden
            extensions += [os.path.join(parent, n) for n in names if n.endswith(".so")]
    files = _libraries([sys.executable, *extensions])
    files = [f for f in files if not any(f.startswith(d + "/") for d in dirs)]
    files += zips + [p for p in (LD_CACHE,) if os.path.isfile(p)]
    return {"dirs": dirs, "files": sorted(set(files)), "masks": sorted(set(masks)),
            "devices": [d for d in DEVICES if os.path.exists(d)]}


# ------------------------------------------------------------------ building it (zygote only)


def _links(path: str) -> tuple[list[tuple[str, str]], str]:
    """The symbolic links met resolving `path` (as (link, target)), and the real path."""
    met = []
    for _ in range(40):
        parts, current = path.strip("/").split("/"), ""
        for i, name in enumerate(parts):
            current += "/" + name
            if os.path.islink(current):
                target = os.readlink(current)
                met.append((current, target))
                base = target if target.startswith("/") else \
                    os.path.join(os.path.dirname(current), target)
                path = os.path.normpath(os.path.join(base, *parts[i + 1:]))
                break
        else:
            return met, path
    raise OSError(f"too many symbolic links: {path}")


class _Builder:
    def __init__(self, new_root: str, mount, read_only):
        self.root, self.mount, self.read_only, self.bound = new_root, mount, read_only, []
        self.files: set[str] = set()

    def at(self, path: str) -> str:
        return self.root + path

    def covered(self, path: str) -> bool:
        """Inside a directory bound already (visible as on the host; never written to)."""
        return any(path == d or path.startswith(d + "/") for d in self.bound)

    def make_dirs(self, path: str) -> None:
        if self.covered(path):
            raise OSError(f"refusing to create {path} inside a bound directory")
        os.makedirs(self.at(path), mode=0o755, exist_ok=True)

    def bind(self, path: str, is_dir: bool, copy: bool = False) -> None:
        """Make `path` (and the symbolic links on the way to it) appear as on the host: a
        read-only bind mount, or (``copy``) a copy in the new root's tmpfs."""
        links, real = _links(path)
        for link, target in links:
            if not self.covered(link) and not os.path.lexists(self.at(link)):
                self.make_dirs(os.path.dirname(link))
                os.symlink(target, self.at(link))
        if self.covered(real) or real in self.files:
            return
        self.make_dirs(os.path.dirname(real))
        if is_dir:
            os.makedirs(self.at(real), mode=0o755, exist_ok=True)
        elif copy:  # no mount of its own: each sample's mount namespace copies fewer mounts
            with open(real, "rb") as source, open(self.at(real), "wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
            os.chmod(self.at(real), os.stat(real).st_mode & 0o755)
            self.files.add(real)
            return
        elif not os.path.exists(self.at(real)):
            os.close(os.open(self.at(real), os.O_CREAT | os.O_WRONLY, 0o644))
        self.mount(real, self.at(real), None, MS_BIND, None)
        # Read-only at once: a later mistake here can never write through to the host.
        self.read_only(self.at(real), False)
        (self.bound.append if is_dir else self.files.add)(real)


def build(new_root: str, layout: dict, mount, read_only, pivot, umount) -> None:
    """Populate the (empty, trusted) directory `new_root` and make it this mount namespace's
    root. ``mount(source, target, fstype, flags, data)``, ``read_only(path, recursive)``
    (mount_setattr: read-only and nosuid, other flags kept, as a user namespace must),
    ``pivot(new, old)`` and ``umount(target, flags)`` are system calls raising OSError."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the host
    size = sum(os.path.getsize(p) for p in layout["files"]) + (1 << 20)
    mount("none", new_root, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={size},nr_inodes=4096,mode=0755")
    b = _Builder(new_root, mount, read_only)
    for directory in layout["dirs"]:
        b.bind(directory, True)
    for path in layout["files"]:  # the interpreter, its libraries, ld.so.cache: ~30 files
        b.bind(path, False, copy=True)
    for path in layout["devices"]:  # real device nodes: a tmpfs here is nodev
        b.bind(path, False)
    for path in layout.get("bound_files", ()):  # toolchain roots (issue 19): too big to copy
        b.bind(path, False)
    for path in layout["masks"]:
        _, real = _links(path)
        mount("none", b.at(real), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,nr_inodes=1,mode=0555")
    for path in ("/tmp", "/proc"):
        b.make_dirs(path)
    b.make_dirs(HOST_PROC)
    mount("/proc", b.at(HOST_PROC), None, MS_BIND | MS_REC, None)
    read_only(new_root, True)
    os.chdir(new_root)
    pivot(".", ".")  # the old root ends up on top of the new one: detach it
    umount(".", MNT_DETACH)
    os.chdir("/")


# ------------------------------------------------------------------ toolchain roots (issue 19)


def libraries(roots: list[str]) -> list[str]:
    """`roots` and the shared libraries they load, transitively (as the loader finds them):
    what :mod:`wizardcoder.sandbox.toolchains` adds to a language's root."""
    return _libraries(roots)
