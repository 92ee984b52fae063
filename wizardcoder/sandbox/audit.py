"""The worker's second layer: an audit hook that refuses what a benchmark solution never needs
(files outside its temp dir, sockets, subprocesses, ctypes, frame and GC walks...).

It gives a sample clear errors; it is not a boundary. Code that reaches native code (the C
types of ``_ctypes`` stay in the process, crafted bytecode through ``marshal.loads``...) can
switch it off, so every guarantee is held by the kernel (``seccomp.py``, namespaces, the
minimal root, cgroups) without it. What is closed here is closed cheaply: the hook never calls
a method of an object the candidate made (a ``str`` subclass's ``__hash__`` would run inside the
hook, with its frame and closure one ``sys._getframe`` away).

Loaded by ``worker.py`` (by path, like ``codec.py``: the worker has no site-packages) before any
candidate code runs, and installed in the inner process after the privilege drop.
"""

from __future__ import annotations


def make_audit_hook(tmp, read_roots):
    """Second layer: refuse what a HumanEval solution never needs. Everything the hook calls is
    bound now (C functions, builtin-type methods), so monkeypatching ``os`` or ``builtins``
    cannot change its checks."""
    import _stat
    import posix

    getcwd, lstat, stat, readlink = posix.getcwd, posix.lstat, posix.stat, posix.readlink
    is_link, s_isdir = _stat.S_ISLNK, _stat.S_ISDIR
    _type, _len, _str, _bytes, _int, _zip = type, len, str, bytes, int, zip
    Denied, _OSError, _ValueError = PermissionError, OSError, ValueError
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    own_pid, devices = posix.getpid(), ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
    deny = frozenset(("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
                      "os.system", "subprocess.Popen", "os.killpg", "sys.addaudithook",
                      "sys._current_frames", "sys._current_exceptions", "sys.settrace",
                      "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                      "code.__new__"))
    deny_prefixes = ("socket.", "ctypes.")
    deny_imports = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters",
                              "_testcapi", "_testinternalcapi", "_testbuffer", "_xxtestfuzz"))
    # event -> (positions of the paths it changes, positions of their dir_fd arguments)
    modifying = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                 "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
                 "os.symlink": ((1,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
                 "os.utime": ((0,), (3,)), "os.truncate": ((0,), (-1,)),
                 "os.setxattr": ((0,), (-1,)), "os.removexattr": ((0,), (-1,))}

    def resolve(path, dir_fd=-1):
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        elif _type(path) is not _str:  # a PathLike could answer differently the second time
            raise Denied("sandbox: only str or bytes paths are allowed")
        if "\0" in path:
            raise Denied("sandbox: NUL in path")
        if not path.startswith("/"):
            base = getcwd() if dir_fd is None or dir_fd == -1 else \
                readlink("/proc/self/fd/" + _str(dir_fd))
            path = base + "/" + path
        pending, parts, links = path.split("/")[::-1], [], 0
        while pending:
            name = pending.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            here = "/" + "/".join(parts) + ("/" if parts else "") + name
            try:
                link = is_link(lstat(here).st_mode)
            except (_OSError, _ValueError):
                link = False
            if not link:
                parts.append(name)
                continue
            links += 1
            if links > 40:
                raise Denied("sandbox: too many symbolic links")
            target = readlink(here)
            if target.startswith("/"):
                parts = []
            pending.extend(target.split("/")[::-1])
        return "/" + "/".join(parts)

    def inside(path, root):
        return path == root or path.startswith(root + "/")

    tmp = resolve(tmp)
    read_roots = tuple(resolve(root) for root in read_roots)

    def check_write(path, dir_fd=-1):
        if dir_fd is True:  # from "open": no dir_fd argument
            dir_fd = -1
        if _type(path) is _int:
            raise Denied("sandbox: changing files through a descriptor is blocked")
        full = resolve(path, dir_fd)
        if not inside(full, tmp) and full != "/dev/null":
            raise Denied("sandbox: writing outside the sandbox directory is blocked: " + full)

    def check_read(path, opening=False):
        if _type(path) is _int or path is None:
            return  # an open descriptor (already checked) or the working directory
        full = resolve(path)
        if inside(full, tmp) or full in devices:
            return
        try:
            is_dir = opening and s_isdir(stat(full).st_mode)
        except (_OSError, _ValueError):
            is_dir = False
        if not is_dir and "/site-packages" not in full and "/dist-packages" not in full:
            for root in read_roots:
                if inside(full, root):
                    return
        raise Denied("sandbox: reading outside the sandbox directory is blocked: " + full)

    def hook(event, args):
        if event == "open":
            if _type(args[0]) is _int:
                return
            # os.open(..., dir_fd=) is audited without its dir_fd, so no directory outside the
            # sandbox may be opened: a dir_fd can only point inside it.
            (check_write if args[2] & write_flags else check_read)(args[0], True)
        elif event in modifying:
            paths, fds = modifying[event]
            for i, where in _zip(paths, fds, strict=True):
                check_write(args[i], -1 if where < 0 else args[where])
        elif event == "os.listdir" or event == "os.scandir":
            check_read(args[0] if args else None)
        elif event == "os.kill":
            if args[0] != own_pid:
                raise Denied("sandbox: signalling other processes is blocked")
        elif event == "import":
            if _type(args[0]) is not _str:
                raise Denied("sandbox: only str module names may be imported")
            if args[0] in deny_imports:
                raise Denied("sandbox: importing " + _str(args[0]) + " is blocked")
        elif event == "object.__getattr__":
            # Tracebacks of exceptions raised here lead to this hook's frames and closures.
            if _type(args[1]) is not _str or args[1] == "tb_frame":
                raise Denied("sandbox: reading traceback frames is blocked")
        elif event in deny or event.startswith(deny_prefixes):
            raise Denied("sandbox: " + event + " is blocked")

    return hook
