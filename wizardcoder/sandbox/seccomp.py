"""The sandbox's kernel-enforced system-call filter (seccomp, classic BPF built here).

A sample may get native code to run in its process whatever the audit hook does (``_ctypes``'s
types stay reachable once the zygote loaded them, crafted bytecode...), so what a sample must
never do is refused by the kernel: the filter is installed in the inner process after its
privilege drop and before the audit hook and the first byte of candidate code, and every
process the sample starts inherits it. Allow-lists: a system call not listed is refused with
EPERM (``clone3`` with ENOSYS, so that the C library falls back to ``clone``, whose flags the
filter can read). Refused in every profile: sockets (every address family: the worker's own
IPC is pipes), SysV and POSIX IPC, ``memfd_create``, namespaces (``unshare``, ``setns``,
``clone`` with a namespace flag), mounts, ``ptrace`` and ``process_vm_*``, ``bpf``,
``perf_event_open``, keyrings, io_uring, ``userfaultfd``, kexec and kernel modules, uid/gid
changes, ``personality``... (:data:`REFUSED` lists the ones the tests try). Another
architecture than x86_64 (``int 0x80`` i386 calls from a 64-bit process) or an x32 call number
kills the process.

API (no import outside the standard library: the worker loads this file by path, as it loads
``codec.py``; the MultiPL-E toolchain runner uses the ``toolchain`` profile)::

    from wizardcoder.sandbox import seccomp
    seccomp.PROFILES                   # {"python", "toolchain", "jvm"}: allowed call names
    program = seccomp.build("toolchain")   # bytes: the BPF instructions (8 bytes each)
    seccomp.install("toolchain")       # PR_SET_NO_NEW_PRIVS + seccomp(SECCOMP_SET_MODE_FILTER)
                                       # on the calling thread; OSError if the kernel refuses
    seccomp.unsupported()              # None, or why this machine cannot filter (architecture)

* ``python``: what a Python sample needs. Threads (``clone`` with ``CLONE_THREAD``), no other
  process (no ``fork``, ``vfork``, ``execve``): a sample is one process, so its address-space
  limit bounds all its memory where no cgroup does.
* ``toolchain``: also ``fork``, ``vfork``, ``clone`` without namespace flags, ``execve`` and
  ``execveat`` (compilers and the programs they build); still no sockets, IPC, memfd,
  namespaces, mounts, ptrace...
* ``jvm``: ``toolchain`` plus ``socketpair`` of the AF_UNIX family only (the JDK needs one to
  start); ``socket``, ``connect`` and every other family stay refused.

``install`` uses ctypes: the caller forgets ctypes afterwards (``worker._forget_ctypes``).
"""

from __future__ import annotations

import os
import struct

# x86_64 system call numbers (asm/unistd_64.h): only those named below.
X86_64 = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7,
    "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
    "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18,
    "readv": 19, "writev": 20, "access": 21, "pipe": 22, "select": 23, "sched_yield": 24,
    "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "shmget": 29, "shmat": 30,
    "shmctl": 31, "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35, "getitimer": 36,
    "alarm": 37, "setitimer": 38, "getpid": 39, "sendfile": 40, "socket": 41, "connect": 42,
    "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48,
    "bind": 49, "listen": 50, "getsockname": 51, "getpeername": 52, "socketpair": 53,
    "setsockopt": 54, "getsockopt": 55, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
    "exit": 60, "wait4": 61, "kill": 62, "uname": 63, "semget": 64, "semop": 65, "semctl": 66,
    "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "fcntl": 72,
    "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76, "ftruncate": 77,
    "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83,
    "rmdir": 84, "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89,
    "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "umask": 95,
    "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100,
    "ptrace": 101, "getuid": 102, "syslog": 103, "getgid": 104, "setuid": 105, "setgid": 106,
    "geteuid": 107, "getegid": 108, "setpgid": 109, "getppid": 110, "getpgrp": 111,
    "setsid": 112, "setreuid": 113, "setregid": 114, "getgroups": 115, "setgroups": 116,
    "setresuid": 117, "getresuid": 118, "setresgid": 119, "getresgid": 120, "getpgid": 121,
    "setfsuid": 122, "setfsgid": 123, "getsid": 124, "capget": 125, "capset": 126,
    "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129,
    "rt_sigsuspend": 130, "sigaltstack": 131, "utime": 132, "mknod": 133, "personality": 135,
    "statfs": 137, "fstatfs": 138, "getpriority": 140, "setpriority": 141,
    "sched_getparam": 143, "sched_getscheduler": 145, "sched_get_priority_max": 146,
    "sched_get_priority_min": 147, "sched_rr_get_interval": 148, "mlock": 149,
    "modify_ldt": 154, "pivot_root": 155, "prctl": 157, "arch_prctl": 158, "setrlimit": 160,
    "chroot": 161, "sync": 162, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167,
    "reboot": 169, "sethostname": 170, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "gettid": 186, "readahead": 187, "getxattr": 191,
    "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194, "llistxattr": 195,
    "flistxattr": 196, "tkill": 200, "time": 201, "futex": 202, "sched_setaffinity": 203,
    "sched_getaffinity": 204, "io_setup": 206, "io_submit": 209, "getdents64": 217,
    "set_tid_address": 218, "restart_syscall": 219, "fadvise64": 221, "timer_create": 222,
    "timer_settime": 223, "timer_gettime": 224, "timer_getoverrun": 225,
    "timer_delete": 226, "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230,
    "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234, "utimes": 235,
    "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239, "mq_open": 240,
    "mq_unlink": 241, "mq_timedsend": 242, "kexec_load": 246, "waitid": 247, "add_key": 248,
    "request_key": 249, "keyctl": 250, "migrate_pages": 256, "openat": 257,
    "mkdirat": 258, "mknodat": 259, "fchownat": 260, "futimesat": 261, "newfstatat": 262,
    "unlinkat": 263, "renameat": 264, "linkat": 265, "symlinkat": 266, "readlinkat": 267,
    "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271, "unshare": 272,
    "set_robust_list": 273, "get_robust_list": 274, "splice": 275, "tee": 276,
    "vmsplice": 278, "move_pages": 279, "utimensat": 280, "epoll_pwait": 281,
    "timerfd_create": 283, "eventfd": 284, "fallocate": 285, "timerfd_settime": 286,
    "timerfd_gettime": 287, "accept4": 288, "eventfd2": 290, "epoll_create1": 291,
    "dup3": 292, "pipe2": 293, "preadv": 295, "pwritev": 296, "perf_event_open": 298,
    "recvmmsg": 299, "fanotify_init": 300, "prlimit64": 302, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "sendmmsg": 307, "setns": 308, "getcpu": 309,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "sched_getattr": 315, "renameat2": 316, "seccomp": 317, "getrandom": 318,
    "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "membarrier": 324, "copy_file_range": 326, "preadv2": 327,
    "pwritev2": 328, "statx": 332, "rseq": 334, "pidfd_send_signal": 424,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432, "pidfd_open": 434,
    "clone3": 435, "close_range": 436, "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439,
    "process_madvise": 440, "epoll_pwait2": 441, "mount_setattr": 442,
    "landlock_create_ruleset": 444, "memfd_secret": 447, "epoll_create": 213,
}

# What a Python interpreter running a sample calls (files inside its root, memory, signals
# within its own PID namespace, time, threads, polling its own pipes).
PYTHON = (
    "read", "write", "open", "close", "stat", "fstat", "lstat", "poll", "lseek", "mmap",
    "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "ioctl",
    "pread64", "pwrite64", "readv", "writev", "access", "pipe", "select", "sched_yield",
    "mremap", "msync", "mincore", "madvise", "dup", "dup2", "pause", "nanosleep", "getitimer",
    "alarm", "setitimer", "getpid", "sendfile", "exit", "wait4", "kill", "uname", "fcntl",
    "flock", "fsync", "fdatasync", "truncate", "ftruncate", "getdents", "getcwd", "chdir",
    "fchdir", "rename", "mkdir", "rmdir", "creat", "link", "unlink", "symlink", "readlink",
    "chmod", "fchmod", "umask", "gettimeofday", "getrlimit", "getrusage", "sysinfo", "times",
    "getuid", "getgid", "geteuid", "getegid", "getppid", "getpgrp", "getgroups", "getresuid",
    "getresgid", "getpgid", "getsid", "capget", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_sigsuspend", "sigaltstack", "utime", "statfs", "fstatfs",
    "getpriority", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "prctl", "arch_prctl", "setrlimit",
    "gettid", "readahead", "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
    "flistxattr", "tkill", "time", "futex", "sched_getaffinity", "getdents64",
    "set_tid_address", "restart_syscall", "fadvise64", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "clock_gettime", "clock_getres",
    "clock_nanosleep", "exit_group", "epoll_wait", "epoll_ctl", "tgkill", "utimes", "waitid",
    "openat", "mkdirat", "newfstatat", "unlinkat", "renameat", "linkat", "symlinkat",
    "readlinkat", "fchmodat", "faccessat", "pselect6", "ppoll", "set_robust_list",
    "get_robust_list", "utimensat", "epoll_pwait", "timerfd_create", "eventfd",
    "timerfd_settime", "timerfd_gettime", "eventfd2", "epoll_create", "epoll_create1", "dup3",
    "pipe2", "preadv", "pwritev", "prlimit64", "getcpu", "renameat2", "getrandom",
    "copy_file_range", "preadv2", "pwritev2", "statx", "rseq", "close_range", "openat2",
    "faccessat2", "epoll_pwait2",
)
# Compilers, linkers, managed runtimes and the programs they build: processes of their own.
TOOLCHAIN = PYTHON + ("fork", "vfork", "execve", "execveat", "setpgid", "setsid",
                      "sched_setaffinity", "membarrier", "get_mempolicy", "fallocate",
                      "futimesat", "chown", "fchown", "lchown", "fchownat", "mknodat")
# The JVM also opens one AF_UNIX socketpair as it starts (FileDispatcherImpl's pre-close
# descriptor): `jvm` is `toolchain` plus socketpair(AF_UNIX, ...) only, decided on its first
# argument; a connected pair reaches nothing outside the sample, and socket() stays refused.
PROFILES = {"python": frozenset(PYTHON), "toolchain": frozenset(TOOLCHAIN),
            "jvm": frozenset(TOOLCHAIN)}
# Checked first (the filter compares one call number after another): what Python calls most.
HOT = ("read", "write", "futex", "mmap", "munmap", "brk", "newfstatat", "openat", "close",
       "lseek", "fstat", "ioctl", "getdents64", "madvise", "mremap", "rt_sigaction",
       "rt_sigprocmask", "pselect6", "poll", "getrandom", "wait4", "exit_group")

# Refused in every profile (the tests try each one).
REFUSED = ("socket", "socketpair", "connect", "bind", "shmget", "shmat", "semget", "msgget",
           "mq_open", "memfd_create", "memfd_secret", "unshare", "setns", "mount", "umount2",
           "pivot_root", "mount_setattr", "open_tree", "fsopen", "chroot", "ptrace",
           "process_vm_readv", "process_vm_writev", "pidfd_getfd", "bpf", "perf_event_open",
           "add_key", "request_key", "keyctl", "io_uring_setup", "io_setup", "userfaultfd",
           "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
           "personality", "setuid", "setresuid", "setgroups", "capset", "seccomp", "iopl",
           "open_by_handle_at", "name_to_handle_at", "fanotify_init", "kcmp", "swapon",
           "reboot", "sethostname", "acct", "syslog", "vmsplice", "move_pages", "migrate_pages",
           "modify_ldt")
assert not any(name in PROFILES[p] for p in PROFILES for name in REFUSED)

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_THREAD = 0x00010000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | \
    0x20000000 | 0x40000000
RET_KILL_PROCESS, RET_ALLOW, RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
AF_UNIX = 1
# classic BPF opcodes
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
NR_OFFSET, ARCH_OFFSET, ARG0_LOW_OFFSET = 0, 4, 16
PR_SET_NO_NEW_PRIVS, SECCOMP_SET_MODE_FILTER, SYS_SECCOMP = 38, 1, 317


def unsupported() -> str | None:
    """Why this machine cannot use the filter, or None."""
    machine = os.uname().machine
    return None if machine == "x86_64" else f"no system call table for {machine} (x86_64 only)"


def _op(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build(profile: str) -> bytes:
    """The filter of ``profile`` as BPF instructions (struct sock_filter, little-endian)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown seccomp profile {profile!r}: expected one of "
                         f"{', '.join(PROFILES)}")
    allowed = [X86_64[n] for n in HOT if n in PROFILES[profile]] + \
        sorted(X86_64[n] for n in PROFILES[profile] if n not in HOT)
    deny, kill = _op(RET_K, RET_ERRNO | EPERM), _op(RET_K, RET_KILL_PROCESS)
    allow = _op(RET_K, RET_ALLOW)
    out = [_op(LD_W_ABS, ARCH_OFFSET), _op(JEQ_K, AUDIT_ARCH_X86_64, 1, 0), kill,
           _op(LD_W_ABS, NR_OFFSET), _op(JGE_K, X32_SYSCALL_BIT, 0, 1), kill,
           _op(JEQ_K, X86_64["clone3"], 0, 1), _op(RET_K, RET_ERRNO | ENOSYS)]
    for number in allowed:  # two instructions each: no jump is ever longer than one
        out += [_op(JEQ_K, number, 0, 1), allow]
    if profile == "jvm":  # socketpair: AF_UNIX only (the accumulator keeps the call number
        out += [_op(JEQ_K, X86_64["socketpair"], 0, 4),  # on every other path)
                _op(LD_W_ABS, ARG0_LOW_OFFSET), _op(JEQ_K, AF_UNIX, 0, 1), allow, deny]
    # clone: never a namespace flag; the python profile only for threads
    out += [_op(JEQ_K, X86_64["clone"], 1, 0), deny, _op(LD_W_ABS, ARG0_LOW_OFFSET),
            _op(JSET_K, CLONE_NAMESPACES, 0, 1), deny]
    if profile == "python":
        out += [_op(JSET_K, CLONE_THREAD, 0, 1), allow, deny]
    else:
        out += [allow]
    return b"".join(out)


def install(profile: str) -> None:
    """Filter every later system call of this thread and of all it starts (no way back).
    Raises OSError when the kernel refuses (no seccomp, or another architecture)."""
    import ctypes

    reason = unsupported()
    if reason:
        raise OSError(0, f"seccomp: {reason}")
    program = build(profile)
    count = len(program) // 8
    buffer = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(count, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    for name, call in (("prctl(PR_SET_NO_NEW_PRIVS)",
                        lambda: libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
                       ("seccomp(SECCOMP_SET_MODE_FILTER)",
                        lambda: libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 0,
                                             ctypes.byref(fprog)))):
        if call() != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}: {os.strerror(err)}")
