"""The toolchains that run MultiPL-E's languages in the sandbox, and each one's minimal root.

A language's root holds its toolchain and nothing else, derived from Debian's package database
on this machine (trusted side, once per process):

* the toolchain's packages (``Toolchain.packages``) and their ``Depends``/``Pre-Depends``,
  transitively, leaving out what only installs or configures them (``INSTALL_ONLY``) and the
  base system (priority required/important) unless named at the top;
* each package's files (``dpkg -L``): a directory holding only such files (``/usr/lib/jvm/...``,
  ``/usr/lib/gcc/...``) is bound read-only whole, anything else file by file;
* every shared library their ELF files load (:func:`wizardcoder.sandbox.rootfs.libraries`, the
  loader's own lookup, so libc and friends come from the base system as the loader finds them),
  plus the paths the steps name (``/usr/bin/java`` resolves through /etc/alternatives: the
  links met on the way are recreated).

A language whose packages are not installed is refused (:class:`ToolchainMissing`) naming the
Debian packages and ``scripts/install-languages.sh``: never scored as a failure.
Running a program in that root: :mod:`wizardcoder.sandbox.toolchain_run`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass, field

from wizardcoder.errors import ExternalError
from wizardcoder.sandbox import rootfs

# Packages whose Depends only serve installing or configuring: never part of a root.
INSTALL_ONLY = frozenset({
    "ca-certificates", "ca-certificates-java", "java-common", "debconf", "ucf", "tzdata",
    "sensible-utils", "adduser", "lsb-base", "init-system-helpers", "dpkg", "perl-base",
    "python3", "python3-minimal", "python3.11", "python3.11-minimal", "libpython3.11-stdlib",
    "libpython3-stdlib", "psmisc", "media-types", "mime-support", "procps", "php-common",
    "libnss3", "libcups2", "libasound2", "libfontconfig1", "fontconfig-config", "libharfbuzz0b",
    "libfreetype6", "liblcms2-2", "libjpeg62-turbo", "libpcsclite1", "ruby-rubygems",
})
SKIP_PRIORITIES = ("required", "important")
# Files no compiler or runtime opens: left out (fewer mounts per sample).
NOT_NEEDED = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/",
              "/usr/share/locale/", "/usr/lib/debug/", "/usr/share/bug/", "/usr/share/gdb/",
              "/usr/share/bash-completion/", "/usr/include/node/")


@dataclass(frozen=True)
class Toolchain:
    """How MultiPL-E's evaluator compiles and runs one language, and what it needs."""

    language: str                      # MultiPL-E's language key (cpp, java, js, ...)
    name: str                          # for people
    packages: tuple[str, ...]          # Debian packages (the top of the closure)
    source: str                        # the program's file name in the sandbox's /tmp
    run: tuple[str, ...]               # argv; {src} and {bin} are filled in
    compile: tuple[str, ...] = ()      # argv of the compile step, none if empty
    env: dict = field(default_factory=dict)
    paths: tuple[str, ...] = ()        # more paths the steps open (alternatives links...)
    # Address-space limits break runtimes that reserve large virtual ranges (JVM, V8, Go):
    # those get RLIMIT_DATA (private writable memory) instead.
    memory_rlimit: str = "as"
    # seccomp.py's profile for every step: "toolchain", or "jvm" (the JDK's startup
    # socketpair, AF_UNIX only).
    seccomp: str = "toolchain"
    builds_in_run: bool = False        # the run step compiles too (`go test`)

    def argv(self, step: tuple[str, ...]) -> list[str]:
        stem = os.path.splitext(self.source)[0]
        return [a.replace("{src}", f"/tmp/{self.source}").replace("{bin}", f"/tmp/{stem}")
                for a in step]


_JAVA_HOME = "/usr/lib/jvm/default-java"
TOOLCHAINS: dict[str, Toolchain] = {t.language: t for t in (
    Toolchain("cpp", "C++", ("g++",), "main.cpp", run=("{bin}",),
              compile=("/usr/bin/g++", "{src}", "-o", "{bin}", "-std=c++17")),
    Toolchain("java", "Java", ("default-jdk-headless", "libjavatuples-java"), "Problem.java",
              compile=("/usr/bin/javac", "-encoding", "UTF8", "-d", "/tmp/classes", "{src}"),
              run=("/usr/bin/java", "-ea", "-cp",
                   "/tmp/classes:/usr/share/java/javatuples.jar", "Problem"),
              env={"CLASSPATH": "/usr/share/java/javatuples.jar", "JAVA_HOME": _JAVA_HOME},
              paths=(_JAVA_HOME, "/usr/bin/java", "/usr/bin/javac"), memory_rlimit="data",
              seccomp="jvm"),
    Toolchain("js", "JavaScript", ("nodejs",), "main.js", run=("/usr/bin/node", "{src}"),
              memory_rlimit="data"),
    Toolchain("ts", "TypeScript", ("nodejs", "node-typescript"), "main.ts",
              compile=("/usr/bin/node", "/usr/share/nodejs/typescript/bin/tsc",
                       "--target", "esnext", "{src}"),
              run=("/usr/bin/node", "/tmp/main.js"), memory_rlimit="data"),
    Toolchain("php", "PHP", ("php-cli",), "main.php", run=("/usr/bin/php", "{src}"),
              paths=("/usr/bin/php", "/usr/share/zoneinfo/UTC", "/etc/php")),
    Toolchain("rs", "Rust", ("rustc",), "main.rs", run=("{bin}",),
              compile=("/usr/bin/rustc", "{src}", "-o", "{bin}"), paths=("/usr/bin/cc",)),
    Toolchain("go", "Go", ("golang-go",), "main_test.go",
              run=("/usr/bin/go", "test", "{src}"),
              env={"GOCACHE": "/tmp/.gocache", "GOPATH": "/tmp/.gopath", "GO111MODULE": "off",
                   "CGO_ENABLED": "0", "GOFLAGS": "-count=1", "GOTOOLCHAIN": "local"},
              memory_rlimit="data", builds_in_run=True),
    Toolchain("sh", "Bash", ("bash", "coreutils", "sed", "grep", "mawk", "bc", "findutils"),
              "main.sh", run=("/usr/bin/bash", "{src}"), paths=("/usr/bin/awk",)),
    Toolchain("lua", "Lua", ("lua5.4", "lua-unit"), "main.lua", run=("/usr/bin/lua", "{src}"),
              paths=("/usr/bin/lua",)),
    Toolchain("rb", "Ruby", ("ruby",), "main.rb", run=("/usr/bin/ruby", "{src}"),
              paths=("/usr/bin/ruby",)),
)}
COMMON_PATHS = ("/usr/lib/locale/C.utf8",)  # the C.UTF-8 locale every step runs in
INSTALL_HINT = "bash scripts/install.sh --languages {langs} (or: apt-get install {packages})"


def packages_for(languages: str) -> list[str]:
    """The Debian packages of a comma-separated list of languages (``all``: every one), for
    ``scripts/install-languages.sh``."""
    names = list(TOOLCHAINS) if languages.strip() == "all" else \
        [n.strip() for n in languages.split(",") if n.strip()]
    return list(dict.fromkeys(p for n in names for p in toolchain(n).packages))


class ToolchainMissing(ExternalError):
    """A language's toolchain is not installed here: refuse, never score it 0."""


def toolchain(language: str) -> Toolchain:
    if language not in TOOLCHAINS:
        raise ExternalError(f"no toolchain for language {language!r}; supported: "
                            f"{', '.join(TOOLCHAINS)}")
    return TOOLCHAINS[language]


@functools.cache
def _status() -> dict[str, dict[str, str]]:
    """Installed packages: name (without :arch) -> fields."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f",
             "${Package}\t${db:Status-Status}\t${Priority}\t${Depends}\t${Pre-Depends}"
             "\t${Provides}\n"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolchainMissing(f"cannot read the Debian package database (dpkg-query): {exc}; "
                               "the language toolchains are found through it") from None
    found: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, status, priority, depends, pre, provides = (line.split("\t") + [""] * 6)[:6]
        if status == "installed":
            found[name] = {"priority": priority, "depends": ", ".join(filter(None, (depends, pre))),
                           "provides": provides}
    for name, info in list(found.items()):
        for virtual in _names(info["provides"]):
            found.setdefault(virtual, {"priority": "", "depends": name, "provides": ""})
    return found


def _names(relation: str) -> list[str]:
    return [re.split(r"[\s(:]", alt.strip())[0] for alt in relation.split(",") if alt.strip()]


def missing_packages(language: str) -> list[str]:
    installed = _status()
    return [p for p in toolchain(language).packages if p not in installed]


def require(language: str) -> Toolchain:
    """The language's toolchain, or ToolchainMissing naming what to install."""
    tool = toolchain(language)
    missing = missing_packages(language)
    if missing:
        raise ToolchainMissing(
            f"the {tool.name} toolchain is not installed (missing Debian package(s): "
            f"{', '.join(missing)}): " + INSTALL_HINT.format(
                langs=language, packages=" ".join(tool.packages)) +
            "; a language without its toolchain is refused, never scored 0")
    return tool


def package_closure(packages: tuple[str, ...]) -> list[str]:
    """The packages and what they depend on (first installed alternative), minus install-only
    and base-system packages reached on the way."""
    installed, seen, todo = _status(), set(), list(packages)
    while todo:
        name = todo.pop()
        if name in seen or name not in installed:
            continue
        info = installed[name]
        if name not in packages and (name in INSTALL_ONLY or
                                     info["priority"] in SKIP_PRIORITIES):
            continue
        seen.add(name)
        for group in info["depends"].split(","):
            alternatives = [a for a in _names(group.replace("|", ",")) if a in installed]
            todo += alternatives[:1]
    return sorted(seen)


def _package_files(packages: list[str]) -> set[str]:
    real = [p for p in packages if p in _listable()]  # not the virtual ones
    out = subprocess.run(["dpkg", "-L", *real], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if line.startswith("/") and
            os.path.lexists(line)}


@functools.cache
def _listable() -> frozenset[str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\n"], capture_output=True,
                         text=True).stdout
    return frozenset(out.split())


@functools.cache
def layout(language: str) -> dict:
    """The root of ``language`` in :func:`rootfs.build`'s form: whole directories bound where
    the toolchain's packages own everything in them, other files one by one."""
    tool = require(language)
    owned_files = {p for p in _package_files(package_closure(tool.packages))
                   if not p.startswith(NOT_NEEDED)}
    files = {p for p in owned_files if os.path.isfile(p) or os.path.islink(p)}
    dirs_with_files = {os.path.dirname(p) for p in files}

    @functools.cache
    def owned(directory: str) -> bool:
        try:
            entries = os.listdir(directory)
        except OSError:
            return False
        for name in entries:
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                if not owned(path):
                    return False
            elif path not in files:
                return False
        return True

    whole = sorted({d for d in dirs_with_files if owned(d) and d.count("/") > 2})
    whole = [d for d in whole if not any(d.startswith(o + "/") for o in whole)]
    loose = sorted(p for p in files if not any(p.startswith(d + "/") for d in whole))
    elf = [p for p in loose if os.path.isfile(p) and not os.path.islink(p)]
    for directory in whole:
        for parent, _, names in os.walk(directory):
            elf += [path for path in (os.path.join(parent, n) for n in names)
                    if ".so" in os.path.basename(path) or os.access(path, os.X_OK)]
    extra = [p for p in tool.paths + COMMON_PATHS if os.path.lexists(p)]
    step_paths = [s[0] for s in (tool.compile, tool.run) if s and s[0].startswith("/usr")]
    libraries = rootfs.libraries([p for p in elf + step_paths if os.path.isfile(p)])
    file_set = {p for p in set(loose) | set(libraries) | set(step_paths) | set(extra)
                if os.path.exists(p) and not os.path.isdir(p)}
    file_set -= {p for p in file_set if any(p.startswith(d + "/") for d in whole)}
    file_set.discard(rootfs.LD_CACHE)
    dirs = whole + [p for p in extra if os.path.isdir(p)]
    return {"dirs": dirs, "bound_files": sorted(file_set), "masks": [],
            "files": [p for p in (rootfs.LD_CACHE,) if os.path.isfile(p)],
            "devices": [d for d in rootfs.DEVICES if os.path.exists(d)]}
