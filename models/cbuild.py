"""Build a C source file into a shared library once per machine and load it with ctypes.

    lib = cbuild.load("models/decode_attention.c", ("-O3", "-march=native", "-fopenmp"))  # ctypes.CDLL
    # raises cbuild.BuildError (one line: the compiler's first error) where there is no compiler or it fails

The compiler is $CC, else `cc`. The library is cached in $XDG_CACHE_HOME/closedloop/native (default
~/.cache/closedloop/native) under a hash of the source, the flags, the compiler's `--version` and this CPU's
model and feature flags: a -march=native build must never be loaded on another kind of CPU (a home directory shared
across a cluster's nodes). It is compiled to a temporary file and renamed into place, so processes building at once
(DDP ranks, sweep workers) never load a half-written file. Where the cache cannot be written, the library is built
in a temporary folder of the process's own, loaded, and its file removed. A first build of a small kernel takes
well under a second; later processes only load it. Tested by `pytest tests/test_decode_attention.py`.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile


class BuildError(RuntimeError):
    """The C source could not be compiled or loaded here; the message is one line."""


def cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "closedloop", "native")


def cpu_identity() -> str:
    """This CPU's model name and feature flags (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().splitlines() if ln.split(":")[0].strip() in ("model name", "flags")]
        return "\n".join(dict.fromkeys(lines))  # the first processor's lines (the others repeat them)
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"{cmd[0]}: {e}") from None


def load(source: str, flags: tuple[str, ...] = ("-O3",)) -> ctypes.CDLL:
    """The shared library built from `source` with `flags` (plus -shared -fPIC), built here on first use."""
    try:
        cc = shlex.split(os.environ.get("CC") or "cc")  # CC may carry a wrapper or flags, e.g. "ccache gcc"
    except ValueError as e:
        raise BuildError(f"CC={os.environ.get('CC')!r} does not parse: {e}") from None
    if not cc or shutil.which(cc[0]) is None:
        raise BuildError(f"no C compiler: {' '.join(cc)!r} is not on PATH (set CC)")
    try:
        with open(source, "rb") as f:
            code = f.read()
    except OSError as e:
        raise BuildError(f"reading {source}: {e}") from None
    version = _run([*cc, "--version"]).stdout.strip()
    key = hashlib.sha256(b"\0".join(s.encode() if isinstance(s, str) else s for s in
                                    (code, " ".join(flags), " ".join(cc), version, cpu_identity()))).hexdigest()[:16]
    name = f"{os.path.splitext(os.path.basename(source))[0]}-{key}.so"
    path = os.path.join(cache_dir(), name)
    private = None  # a folder of this process's own, where the cache cannot be written (removed after loading)
    if not os.path.exists(path):
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir())
        except OSError:  # a read-only (or unusable) cache
            try:
                private = tempfile.mkdtemp(prefix="closedloop-native-")
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=private)
            except OSError as e:
                raise BuildError(f"no folder to build in: {e}") from None
            path = os.path.join(private, name)
        os.close(fd)
        try:
            done = _run([*cc, *flags, "-shared", "-fPIC", "-o", tmp, source, "-lm"])
            if done.returncode != 0:
                errors = [ln for ln in done.stderr.splitlines() if "error" in ln] or done.stderr.splitlines() or [""]
                raise BuildError(f"{' '.join(cc)} failed on {os.path.basename(source)}: {errors[0].strip()}")
            os.replace(tmp, path)  # atomic: another process sees the whole library or none
        except OSError as e:
            raise BuildError(f"installing the library built from {os.path.basename(source)}: {e}") from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise BuildError(f"loading {path}: {e}") from None
    finally:
        if private is not None:  # loaded (or not): the file is no longer needed on disk
            shutil.rmtree(private, ignore_errors=True)
