"""The embedded teacher: `llama-cpp-python`'s OpenAI-compatible server on a local GGUF.

By default it serves the SmolLM2-135M-Instruct GGUF shipped with the student, under the model
name :data:`DEFAULT_ALIAS` (the default ``teacher.model``), so a distillation works offline with
nothing but llama-cpp-python's server (``bash scripts/setup.sh --test`` builds it portably). Any other ``.gguf`` file works the same way.

:class:`TeacherServer` runs it in the background (tests, scripts); :func:`serve` in the foreground
(``bundlellm teacher serve``); :func:`check_server` is the smoke check (``bundlellm teacher check``).
Each reports a server process that ends on its own with its exit code or signal and its last log
lines: a llama.cpp build for another CPU dies of SIGILL on its first completion without a word.
"""

from __future__ import annotations

import atexit
import codecs
import http.client
import importlib.metadata
import importlib.util
import json
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
from typing import IO, TextIO

from recbole_bundlellm.errors import BundleLLMError

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
INSTALL_HINT = ("install it with `bash scripts/setup.sh --test` (it compiles llama.cpp portably once, "
                "about 4 minutes)")
REBUILD_HINT = ("the llama.cpp build does not run on this CPU; rebuild it with "
                "`bash scripts/setup.sh --test --rebuild-teacher`")


class TeacherServerError(BundleLLMError, RuntimeError):
    """The embedded teacher server cannot be started (not installed, bad model, port taken), died,
    or did not answer."""


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
    from recbole_bundlellm.embedded import embedded_gguf_path

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
    """Fail early when ``port`` is taken: the readiness check would otherwise talk to its owner.

    The probe binds with ``SO_REUSEADDR`` as the server itself (uvicorn) does: connections in
    TIME_WAIT, which every stopped server and every readiness probe leave for a minute, then do
    not count as taken, while a live listener still does (Linux refuses that bind either way).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


# -- how a server process ended -------------------------------------------------------------------

_SIGNAL_HINTS = {
    # A wheel compiled for another CPU (e.g. with AVX-512 or -march=native) traps on its first
    # matrix operation, usually the first completion, and leaves no line in the log.
    signal.SIGILL: REBUILD_HINT,
    signal.SIGKILL: "something killed it; when nobody did, the kernel did for lack of memory (see `dmesg`)",
}


def exit_signal(returncode: int) -> signal.Signals | None:
    """The signal that ended a process: ``-N`` as :mod:`subprocess` reports it, ``128+N`` as a shell does."""
    if returncode < 0:
        number = -returncode
    elif 128 < returncode <= 128 + 64:
        number = returncode - 128
    else:
        return None
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: ``exited with code 1``, ``was killed by SIGILL (exit status 132)``."""
    sig = exit_signal(returncode)
    if sig is None:
        return f"exited with code {returncode}"
    if returncode < 0:
        return f"was killed by {sig.name} (exit status {128 + sig.value})"
    return f"exited with code {returncode} ({sig.name}, as a shell reports it)"


def exit_hint(returncode: int) -> str | None:
    """What to do about a process that ended this way, where we know it (e.g. SIGILL: rebuild)."""
    sig = exit_signal(returncode)
    return _SIGNAL_HINTS.get(sig) if sig is not None else None


def exit_report(returncode: int, when: str = "") -> str:
    """One line on a teacher server that ended on its own: how, ``when``, and what to do."""
    text = f"the teacher server {describe_exit(returncode)}" + (f" {when}" if when else "")
    hint = exit_hint(returncode)
    return f"{text}: {hint}" if hint else text


def exit_status(returncode: int) -> int:
    """A shell-style status for a server that ended on its own: never 0, ``128+N`` for signal N."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


class TeacherServer:
    """The embedded teacher server as a background subprocess (a context manager).

    ``port=0``/``None`` picks a free port. :meth:`start` returns once ``GET /v1/models`` answers;
    if the process dies first, :class:`TeacherServerError` says how (exit code or signal) and
    carries the tail of its log. From then on a watcher thread waits on the process: if it dies
    before :meth:`stop`, the reason is kept in :attr:`failure`, :meth:`check` raises it, and
    (unless ``log_failure=False``) it is logged as an error at once: the client itself only sees
    refused connections.
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, host: str = DEFAULT_HOST,
                 port: int | None = 0, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = DEFAULT_N_THREADS,
                 alias: str = DEFAULT_ALIAS, log_path: str | os.PathLike[str] | None = None,
                 startup_timeout: float = 120.0, log_failure: bool = True) -> None:
        self.model_path = model_path
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.startup_timeout = startup_timeout
        self.log_failure = log_failure
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._failure: str | None = None

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

    @property
    def failure(self) -> str | None:
        """Why the server died after it had started (exit code or signal, log tail), or None."""
        return self._failure

    def check(self) -> None:
        """Raise :class:`TeacherServerError` unless the server is running (with :attr:`failure` if it died)."""
        if self._failure is not None:
            raise TeacherServerError(self._failure)
        if not self.running:
            raise TeacherServerError("the teacher server is not started")

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
        self._failure = None
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
            except TeacherServerError:
                tail = _tail(self.log_path)
                self.stop(remove_log=False)
                if auto_port and "address already in use" in tail.lower() and attempt < 2:
                    continue
                raise
            threading.Thread(target=self._watch, args=(self.process,), name="teacher-server-watcher",
                             daemon=True).start()
            return self
        raise TeacherServerError("unreachable")  # pragma: no cover

    def _died(self, returncode: int, when: str) -> str:
        """The report of a server process that ended on its own: how, when, what to do, its log's tail."""
        return (f"{exit_report(returncode, when)}\n"
                f"log {self.log_path} (last lines):\n{_tail(self.log_path) if self.log_path else '(no log)'}")

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        returncode = proc.wait()
        # stop() forgets the process before it terminates it: an exit it caused is no failure.
        if proc is not self.process:
            return
        self._failure = self._died(returncode, f"while serving {self.base_url}")
        if self.log_failure:
            log.error("%s", self._failure)

    def _wait_ready(self) -> None:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TeacherServerError(self._died(code, "before answering"))
            if _models_ready(self.base_url):
                return
            time.sleep(0.2)
        raise TeacherServerError(f"the teacher server did not answer {self.base_url}/models within "
                                 f"{self.startup_timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}")

    def wait_exit(self, timeout: float) -> int | None:
        """The server's exit code once it has ended, waiting at most ``timeout`` s; None while it runs."""
        proc = self.process
        if proc is None:
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, remove_log: bool = True) -> None:
        """Terminate the server (kill it after 10 s); a no-op when it is not running.

        The log is kept when the server had died on its own (:attr:`failure` names it).
        """
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
        if remove_log and self._own_log and self.log_path is not None and self._failure is None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> TeacherServer:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- the smoke check --------------------------------------------------------------------------------

CHECK_PROMPT = "Say OK."


def check_server(model_path: str | os.PathLike[str] | None = None, *, timeout: float = 120.0,
                 n_threads: int | None = DEFAULT_N_THREADS) -> str:
    """Start the embedded server on a free port, ask one chat completion of 4 tokens, stop it.

    Returns one line saying what answered and how fast. Raises :class:`TeacherServerError` saying
    what went wrong and what to do: llama-cpp-python missing (the install hint), the model file
    missing, the server dead (exit code or signal, the tail of its log, a rebuild hint for SIGILL),
    or no answer within ``timeout`` seconds (startup and answer together).
    """
    deadline = time.monotonic() + timeout
    try:
        model = _check_model(model_path)
    except FileNotFoundError as exc:  # the embedded model's package is missing
        raise TeacherServerError(str(exc)) from None
    # A death is the error raised here: the watcher need not log it as well.
    server = TeacherServer(model, port=0, n_threads=n_threads, startup_timeout=timeout, log_failure=False)
    started = time.monotonic()
    try:
        server.start()
        ready_s = time.monotonic() - started
        started = time.monotonic()
        answer, tokens = _ask_once(server, max(1.0, deadline - time.monotonic()))
        answer_s = time.monotonic() - started
    except BaseException:
        server.stop(remove_log=False)  # the message names the log: keep it
        raise
    server.stop()
    return (f"teacher OK: llama-cpp-python {_llama_cpp_version()} served {model.name} (ready in {ready_s:.1f} s) "
            f"and answered {answer!r} ({tokens} tokens) in {answer_s:.1f} s")


def _llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _ask_once(server: TeacherServer, timeout: float) -> tuple[str, int]:
    """One short chat completion over HTTP: (answer text, completion tokens)."""
    body = json.dumps({"model": server.model, "messages": [{"role": "user", "content": CHECK_PROMPT}],
                       "max_tokens": 4, "temperature": 0.0}).encode("utf-8")
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local
    try:
        with opener.open(request, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", errors="replace")
        raise TeacherServerError(f"the teacher server answered a chat completion with HTTP {exc.code}: "
                                 f"{detail}; log {server.log_path}:\n{_tail(server.log_path)}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", exc)
        timed_out = isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError)
        # A dying server drops the connection a moment before its process is gone: wait for it
        # (a server that merely took too long is still there: no need to wait).
        code = server.wait_exit(0.0 if timed_out else 5.0)
        if code is not None:
            raise TeacherServerError(server._died(code, "while answering a chat completion")) from None
        if timed_out:
            raise TeacherServerError(
                f"the teacher server did not answer a 4-token chat completion within {timeout:.0f} s "
                f"(an overloaded machine or a model too large for it? try a longer timeout); "
                f"log {server.log_path}:\n{_tail(server.log_path)}") from None
        raise TeacherServerError(f"a chat completion to the teacher server failed: {reason}; "
                                 f"log {server.log_path}:\n{_tail(server.log_path)}") from None
    try:
        data = json.loads(raw)
        answer = data["choices"][0]["message"]["content"] or ""
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise TeacherServerError(f"the teacher server answered without a chat completion: "
                                 f"{raw[:300].decode('utf-8', errors='replace')}") from None
    return answer, tokens


# -- the foreground server --------------------------------------------------------------------------

class _Relay:
    """Copies a child's output to our own streams as it comes, keeping its last bytes for a report."""

    def __init__(self, keep: int = 64 * 1024) -> None:
        self._keep = keep
        self._tail = bytearray()
        self._lock = threading.Lock()

    def pump(self, source: IO[bytes], sink: TextIO) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = source.fileno()
        try:
            # os.read returns what is there: progress dots without a newline show up at once.
            while chunk := os.read(fd, 65536):
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-self._keep]
                try:
                    sink.write(decoder.decode(chunk))
                    sink.flush()
                except (OSError, ValueError):
                    pass  # our terminal is gone: keep draining, or the child would block on a full pipe
        finally:
            source.close()

    def lines(self, n: int = 30) -> str:
        with self._lock:
            text = self._tail.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-n:]) or "(no output)"


ALL_INTERFACES = ("0.0.0.0", "", "::")


def local_base_url(host: str, port: int) -> str:
    """The URL this machine reaches the server at (a server on every interface: via 127.0.0.1)."""
    return f"http://{'127.0.0.1' if host in ALL_INTERFACES else host}:{port}/v1"


def serving_line(model: str | os.PathLike[str], alias: str, host: str, port: int) -> str:
    """What ``teacher serve`` says when it starts: where it listens, truthfully."""
    if host in ALL_INTERFACES:
        return (f"serving {model} as model '{alias}' on every network interface ({host or '0.0.0.0'}:{port}): "
                f"anyone who can reach this machine can use it; here: {local_base_url(host, port)} (Ctrl-C stops it)")
    return f"serving {model} as model '{alias}' on {local_base_url(host, port)} (Ctrl-C stops it)"


def serve(model_path: str | os.PathLike[str] | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = DEFAULT_N_THREADS, alias: str = DEFAULT_ALIAS,
          verbose: bool = False) -> int:
    """Run the teacher server in the foreground until Ctrl-C (or SIGTERM): then 0.

    If the server ends on its own, its last output lines and the reason (exit code or signal,
    with a rebuild hint for SIGILL) go to stderr and the result is non-zero: its exit code, or
    128 + N for signal N, as a shell reports it.
    """
    model = _check_model(model_path)
    require_llama_cpp()
    _check_port_free(host, port)
    cmd = server_command(model, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads, alias=alias,
                         verbose=verbose)
    base_url = local_base_url(host, port)
    print(serving_line(model, alias, host, port), flush=True)
    # Its output is relayed (not inherited) so that the last lines can be repeated if it dies.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    relay = _Relay()
    pumps = [threading.Thread(target=relay.pump, args=(pipe, sink), name="teacher-serve-relay", daemon=True)
             for pipe, sink in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
    for pump in pumps:
        pump.start()

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
        returncode = proc.wait()
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
        for pump in pumps:
            pump.join(timeout=5)
    print(f"the teacher server's last output lines:\n{relay.lines()}\nerror: {exit_report(returncode)}",
          file=sys.stderr, flush=True)
    return exit_status(returncode)
