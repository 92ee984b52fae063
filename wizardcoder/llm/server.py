"""Start the embedded llama.cpp server for the bundled GGUF, and open a client for any provider.

The default pipeline must run with no key and no network, yet use the same client code as a
paid API, so the bundled model is served through llama.cpp's OpenAI-compatible server on
127.0.0.1. A model server is a heavy child process: if it outlives us (Ctrl-C, SIGTERM from
`dvc exp` cancellation, our own SIGKILL) it keeps a port, gigabytes and CPU cores. So it runs
in its own process group, is killed by the kernel when its parent dies (PR_SET_PDEATHSIG),
and is always stopped on exit, exceptions and signals. Its chatter goes to a log file in the
cache folder, not to the stage's output; the tail is quoted when it fails to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wizardcoder.credentials import read_key, without_secrets
from wizardcoder.embedded import embedded_gguf_path
from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.llm.cache import RequestCache
from wizardcoder.llm.client import LLMClient
from wizardcoder.llm.config import LLMConfig, openai_identity
from wizardcoder.paths import cache_dir

LOG_FILE = "embedded_server.log"
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 10.0
# Loaded in the parent: dlopen after fork() in a threaded process can deadlock.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent(parent_pid: int):
    def preexec() -> None:
        # The kernel sends SIGKILL when the thread that started us exits, even by SIGKILL.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)
    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity_for_gguf(path: Path, n_ctx: int) -> str:
    """Cache identity of a GGUF served by llama.cpp: the file's content (sha256, not its name
    or place) and every server setting that changes answers: the context size ``n_ctx``
    (``llm.embedded_n_ctx``; a smaller window truncates or refuses long requests) and the
    llama-cpp-python version. Not the port, the host or the thread count (``n_threads``
    splits the same sums across cores)."""
    stat = Path(path).stat()
    sha = _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    return (f"gguf:{Path(path).name}:sha256={sha}:n_ctx={int(n_ctx)}"
            f":llama-cpp-python={_llama_cpp_version()}")


def _llama_cpp_version() -> str:
    """The server's version: another llama.cpp may sample or tokenize differently."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "none"


def embedded_identity(config: LLMConfig, gguf_path: Path | None = None) -> str:
    """The cache identity of the embedded server ``config`` starts (see
    :func:`model_identity_for_gguf`)."""
    return model_identity_for_gguf(gguf_path or embedded_gguf_path(), config.embedded_n_ctx)


class EmbeddedServer:
    """``with EmbeddedServer(cfg) as srv:`` -> ``srv.base_url`` answers OpenAI chat requests."""

    def __init__(self, config: LLMConfig, *, gguf_path: Path | None = None,
                 log_path: Path | None = None):
        self.config = config
        self.gguf_path = Path(gguf_path) if gguf_path else embedded_gguf_path()
        self.log_path = Path(log_path) if log_path else cache_dir() / LOG_FILE
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_offset = 0
        self._previous_sigterm = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedServer is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pgid(self) -> int | None:
        return self.process.pid if self.process else None  # start_new_session: pgid == pid

    def command(self, port: int) -> list[str]:
        threads = self.config.embedded_n_threads or _cpu_count()
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf_path),
                "--model_alias", self.config.model, "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", str(self.config.embedded_n_ctx), "--n_threads", str(threads)]

    def start_command(self) -> str:
        """The running server's command line, for an error saying it has stopped."""
        return shlex.join([Path(self.command(self.port)[0]).name, *self.command(self.port)[1:]])

    def __enter__(self) -> EmbeddedServer:
        self._install_sigterm()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        try:
            import llama_cpp  # noqa: F401  (fail here, clearly, not in a child's log)
        except ImportError as exc:
            raise ExternalError("the embedded LLM needs llama-cpp-python with its server: "
                                "pip install 'llama-cpp-python[server]'") from exc
        env = without_secrets(os.environ, self.config.api_key_env)  # it serves with no key
        env["HF_HUB_OFFLINE"] = "1"  # the model is a local file; never reach for the Hub
        for attempt in range(3):  # the free port can be taken before the server binds it
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._log_offset = log.tell()
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} "
                          f"starting: {' '.join(self.command(self.port))}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    self.command(self.port), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()))
            try:
                self._wait_ready()
                return
            except ExternalError:
                if attempt < 2 and "address already in use" in self.log_tail().lower():
                    self._kill()
                    continue
                raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.embedded_startup_timeout_s
        # No proxies: loopback traffic must not go through (or be broken by) one.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            code = self.process.poll()
            if code is not None:
                raise ExternalError(f"the embedded llama.cpp server exited with code {code} "
                                    f"while starting (log: {self.log_path}):\n{self.log_tail()}")
            try:
                with opener.open(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ExternalError(
                    f"the embedded llama.cpp server did not answer on {self.base_url} within "
                    f"{self.config.embedded_startup_timeout_s:g} s (llm.embedded_startup_"
                    f"timeout_s; log: {self.log_path}):\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the whole process group, then kill it; safe to call twice."""
        try:
            self._kill()
        finally:
            self._restore_sigterm()

    def _kill(self) -> None:
        proc, self.process = self.process, None
        try:
            if proc is not None and proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
            if proc is not None:
                # Also when the leader is gone: a grandchild may still hold the group.
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            self.port = None

    def _install_sigterm(self) -> None:
        # Python's default SIGTERM kills us without running `finally`, leaking the server;
        # turning it into SystemExit makes every `with` block unwind. Only the main thread
        # may install handlers; elsewhere PDEATHSIG is the safety net.
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame):
            raise SystemExit(128 + signum)

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read_api_key(config: LLMConfig) -> str | None:
    """The key from the environment variable named by ``api_key_env``; never from params."""
    key = read_key(config.api_key_env)
    if key is None and config.is_openai_cloud:
        raise ConfigError(f"llm.api_key_env: the environment variable {config.api_key_env} is "
                          f"not set; export it with your OpenAI API key (provider 'openai', "
                          f"base_url {config.effective_base_url})")
    return key


def model_identity(config: LLMConfig, model: str | None = None) -> str:
    """The request-cache identity :func:`open_client` gives ``model`` (default: ``llm.model``)
    under ``config``; computed without starting anything (the dry run uses it too)."""
    if config.provider == "embedded":
        return embedded_identity(config)
    return openai_identity(model or config.model, config.effective_base_url)


@contextmanager
def open_client(config: LLMConfig, *, cache_path: str | Path | None = None
                ) -> Iterator[LLMClient]:
    """A ready :class:`LLMClient` for ``config``; the embedded server lives as long as it.
    An OpenAI-compatible server that refuses connections fails here, naming its URL and the
    command that would start it (:meth:`Endpoint.check_listening`)."""
    with RequestCache(cache_path) as cache:
        if config.provider == "embedded":
            with EmbeddedServer(config) as server:
                yield LLMClient(config, server.base_url, None,
                                embedded_identity(config, server.gguf_path), cache,
                                server_command=server.start_command())
        else:
            key = read_api_key(config)
            url = config.effective_base_url
            client = LLMClient(config, url, key, lambda model: model_identity(config, model),
                               cache)
            client.endpoint.check_listening()  # a dead server fails here, in milliseconds
            yield client
