"""Build WebRTC's audio processing (webrtc-audio-processing 2.1) and our shim into apm_library's file."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from personaplex_tui.audio import apm_library
from personaplex_tui.audio.pip_index import Index, pip_index

# The sources: the sdist of aec-audio-processing on PyPI carries freedesktop's
# webrtc-audio-processing 2.1 (a meson project) with abseil-cpp bundled under subprojects/, so
# the build needs no network once the sdist is here. Pinned by its hash.
SDIST_PROJECT = "aec-audio-processing"
SDIST_FILE = "aec_audio_processing-1.0.1.tar.gz"
SDIST_SHA256 = "f03a3ce3f45bf15a04a8504d0f692a651180ca2d3171bd9f3de0516e5f2b8360"
SDIST_TREE = "aec_audio_processing-1.0.1/webrtc-audio-processing"
EXPORTS = (
    "ppx_apm_version",
    "ppx_apm_create",
    "ppx_apm_reverse",
    "ppx_apm_forward",
    "ppx_apm_destroy",
)
SHIM_SOURCE = Path(__file__).parent / "native" / "ppx_apm.cc"
# Defines that build WebRTC itself (they mark its classes exported): not for the shim, whose
# only exported symbols are EXPORTS.
LIBRARY_ONLY_DEFINES = ("-DWEBRTC_LIBRARY_IMPL", "-DWEBRTC_ENABLE_SYMBOL_EXPORT")
LOG_TAIL_LINES = 15
# Loads a library in a fresh interpreter (a broken one cannot take the builder down) and
# prints its version once every entry point is found.
_LOAD_CHECK = (
    "import ctypes, sys\n"
    "lib = ctypes.CDLL(sys.argv[1])\n"
    "for name in sys.argv[2:]: getattr(lib, name)\n"
    "print(lib.ppx_apm_version())\n"
)


class BuildError(Exception):
    """Why the library was not built, in one sentence (no final period). `lasting`: the build
    itself failed (not a download or a missing tool), so trying again would fail again."""

    lasting = False


@dataclass(frozen=True)
class Tools:
    """The programs the build runs."""

    meson: str
    ninja: str
    cxx: str


def tool_search_path() -> str:
    """Where the build looks for meson and ninja: this Python's own scripts folder (a venv's
    bin/, even when not activated), then PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def find_tools(search_path: str) -> Tools:
    """meson, ninja and a C++ compiler (CXX, else c++, g++ or clang++) on `search_path`."""
    meson, ninja = shutil.which("meson", path=search_path), shutil.which("ninja", path=search_path)
    if meson is None or ninja is None:
        missing = " and ".join(n for n, p in (("meson", meson), ("ninja", ninja)) if p is None)
        raise BuildError(f"{missing} not found: pip install meson ninja")
    given = shlex.split(os.environ.get("CXX", ""))
    names = given[:1] or ["c++", "g++", "clang++"]
    cxx = next((found for n in names if (found := shutil.which(n, path=search_path))), None)
    if cxx is None:
        raise BuildError(
            "no C++ compiler (c++, g++ or clang++) found: install g++ (Debian/Ubuntu: "
            "apt install g++) or, on macOS, the Xcode command line tools (xcode-select --install)"
        )
    return Tools(meson=meson, ninja=ninja, cxx=cxx)


def library_version(path: Path) -> int | None:
    """The version `path` reports once loaded with every entry point, or None where it does not
    exist or does not load."""
    if not path.is_file():
        return None
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_CHECK, str(path), *EXPORTS],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def sdist_url(index: Index) -> str:
    """The sdist's address, from the project's page of a simple (PEP 503) index."""
    page = f"{index.url.rstrip('/')}/{SDIST_PROJECT}/"
    with index.open(page) as answer:
        html = answer.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', html):
        link = urllib.parse.urljoin(page, href.replace("&amp;", "&"))
        if urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1] == SDIST_FILE:
            return link
    raise BuildError(f"{index.shown(page)} does not list {SDIST_FILE}")


def download_sdist(folder: Path) -> Path:
    """Download the sdist into `folder` (unchecked: `check_sdist` does that)."""
    try:
        index = pip_index()
        url = sdist_url(index)
        target = folder / SDIST_FILE
        with index.open(url) as answer, target.open("wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", None) or exc
        raise BuildError(f"could not download {SDIST_FILE} ({reason})") from exc
    return target


def check_sdist(path: Path) -> None:
    """Refuse a file whose sha256 is not the pinned one."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != SDIST_SHA256:
        raise BuildError(
            f"{path.name} has sha256 {digest.hexdigest()}, not the expected {SDIST_SHA256}"
        )


def extract_tree(sdist: Path, dest: Path) -> Path:
    """Extract the webrtc-audio-processing/ folder of the sdist into `dest` (plain files and
    folders only; a member with an absolute path, `..` or a link refuses the whole file) and
    return it."""
    prefix = SDIST_TREE + "/"
    with tarfile.open(sdist, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise BuildError(f"{sdist.name} holds an unsafe path ({m.name!r})")
            if not (m.isfile() or m.isdir()) and m.name.startswith(prefix):
                raise BuildError(f"{sdist.name} holds a link or special file ({m.name!r})")
        root = dest / "webrtc-audio-processing"
        for m in members:
            if not m.name.startswith(prefix):
                continue
            out = root / m.name[len(prefix) :]
            if m.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(m)
            assert source is not None  # a regular file
            with source, out.open("wb") as f:
                shutil.copyfileobj(source, f)
            out.chmod(0o755 if m.mode & 0o111 else 0o644)
    if not (root / "meson.build").is_file():
        raise BuildError(f"{sdist.name} has no {SDIST_TREE}/meson.build")
    return root


class Log:
    """The build's log file; each step's output goes there and, unless quiet, to stdout."""

    def __init__(self, path: Path, quiet: bool) -> None:
        self.path = path
        self.quiet = quiet
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def run(self, what: str, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        """Run `command`; a failure is a BuildError naming `what`, its output's end shown."""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        with self.path.open("a") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                )
            except OSError as exc:
                raise BuildError(f"{what} could not start ({exc.strerror or exc})") from exc
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail.append(line)
                if not self.quiet:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            code = proc.wait()
        if code != 0:
            if self.quiet:
                sys.stderr.write("".join(tail))
            raise BuildError(f"{what} failed (exit {code}; its log is {self.path})")


def _targets(build: Path) -> list[dict]:
    return json.loads((build / "meson-info" / "intro-targets.json").read_text())


def _static_libraries(build: Path) -> list[Path]:
    """Every static library of the project, WebRTC's and abseil's (the example is not built)."""
    files = [
        Path(f) for t in _targets(build) if t["type"] == "static library" for f in t["filename"]
    ]
    if not any("webrtc-audio-processing" in f.name for f in files):
        raise BuildError("the meson build has no webrtc-audio-processing library")
    return files


def _system_libraries(build: Path) -> list[str]:
    """The system libraries WebRTC links with, as meson links its example executable."""
    found: list[str] = []
    for target in _targets(build):
        for source in target.get("target_sources", []):
            if target["type"] != "executable" or "linker" not in source:
                continue
            params = source.get("parameters", [])
            for i, p in enumerate(params):
                if p.startswith("-l") or p == "-pthread":
                    found.append(p)
                elif p == "-framework" and i + 1 < len(params):
                    found += [p, params[i + 1]]
                elif p.startswith("-Wl,-framework,"):
                    found.append(p)
    if not found:
        found = ["-pthread"] + (["-framework", "Foundation"] if sys.platform == "darwin" else [])
    return found


def shim_flags(build: Path, tree: Path) -> tuple[list[str], list[str]]:
    """The compiler (with any launcher such as ccache) and the flags that compiled WebRTC's
    AEC3 (its -D, -I and -std), from the build's compile_commands.json."""
    entries = json.loads((build / "compile_commands.json").read_text())
    aec3 = [e for e in entries if "/aec3/echo_canceller3.cc" in e["file"].replace("\\", "/")]
    if not aec3:
        raise BuildError("the meson build does not compile aec3/echo_canceller3.cc")
    entry = aec3[0]
    words = entry.get("arguments") or shlex.split(entry["command"])
    first_flag = next(i for i, w in enumerate(words) if w.startswith("-"))
    compiler, flags = words[:first_flag], [f"-I{tree}"]
    for w in words[first_flag:]:
        if w.startswith("-D") and w not in LIBRARY_ONLY_DEFINES or w.startswith("-std="):
            flags.append(w)
        elif w.startswith("-I"):
            flags.append(f"-I{Path(entry['directory'], w[2:]).resolve()}")
    return compiler, flags


def link_shim(build: Path, tree: Path, out: Path) -> list[str]:
    """The command that compiles ppx_apm.cc and links it with the static libraries into `out`,
    exporting EXPORTS alone."""
    compiler, flags = shim_flags(build, tree)
    archives = [str(a) for a in _static_libraries(build)]
    common = [*compiler, "-O2", "-fPIC", "-fvisibility=hidden", *flags, str(SHIM_SOURCE)]
    system = _system_libraries(build)
    if sys.platform == "darwin":
        exports = build / "ppx_apm.exports"
        exports.write_text("".join(f"_{name}\n" for name in EXPORTS))
        return [
            *common,
            "-dynamiclib",
            "-o",
            str(out),
            *archives,
            *system,
            f"-Wl,-exported_symbols_list,{exports}",
        ]
    return [
        *common,
        "-shared",
        "-o",
        str(out),
        "-Wl,--exclude-libs,ALL",
        "-Wl,--no-undefined",
        "-Wl,--start-group",
        *archives,
        "-Wl,--end-group",
        *system,
    ]


def build_library(tree: Path, tools: Tools, out: Path, log: Log) -> None:
    """Configure and build WebRTC's static libraries in `tree`, then link the shim into `out`."""
    env = dict(os.environ, NINJA=tools.ninja)
    env["PATH"] = os.pathsep.join([str(Path(tools.ninja).parent), env.get("PATH", "")])
    env.setdefault("CXX", tools.cxx)
    build = tree / "build"
    setup = [
        tools.meson,
        "setup",
        str(build),
        "--buildtype=release",
        "--wrap-mode=nodownload",
        # the bundled abseil, never the system's (found by pkg-config where installed: its
        # static archives are not the project's, and the library would need the system's)
        "--force-fallback-for=abseil-cpp",
        "-Ddefault_library=static",
    ]
    log.run("meson setup", setup, tree, env)
    try:
        # ninja names them relative to the build folder (macOS's temp folder is behind a symlink)
        archives = [p.resolve().relative_to(build.resolve()) for p in _static_libraries(build)]
        link = link_shim(build, tree, out)
    except (ValueError, LookupError, TypeError, AttributeError, StopIteration) as exc:
        raise BuildError(
            f"meson's description of the build (meson-info/intro-targets.json and "
            f"compile_commands.json in {build}) is not as expected ({type(exc).__name__}"
            + (f": {exc})" if str(exc) else ")")
        ) from exc
    ninja = [tools.ninja, "-C", str(build), *map(str, archives)]
    log.run("the WebRTC build (ninja)", ninja, tree, env)
    log.run("compiling ppx_apm.cc", link, tree, env)


@contextlib.contextmanager
def build_lock(target: Path, quiet: bool = True) -> Iterator[None]:
    """Hold the lock of `target`'s builds: a second build (two `./dev app` at once) waits."""
    with target.with_name(f"{target.stem}.build.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print("ppx-tui: waiting for another build of the echo canceller.", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(tools: Tools, sdist: Path | None, quiet: bool, force: bool = False) -> Path:
    """Fetch and check the sdist, build, and put the library in place; returns its path. A
    build that finds the library built by another while it waited for the lock is done."""
    target = apm_library.library_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(target, quiet):
        if not force and library_version(target) == apm_library.SHIM_VERSION:
            return target
        return _install_locked(tools, sdist, quiet, target)


def _install_locked(tools: Tools, sdist: Path | None, quiet: bool, target: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="ppx-apm-build-")).resolve()
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".part")
    os.close(handle)
    part = Path(name)
    try:
        if sdist is None:
            sdist = download_sdist(work)
        check_sdist(sdist)
        # the log of the last build (which a note may name) stays until the sources are here
        log = Log(target.parent / f"{target.stem}.build.log", quiet)
        tree = extract_tree(sdist, work)
        print("ppx-tui: building WebRTC's audio processing; this takes a few minutes.", flush=True)
        try:
            build_library(tree, tools, part, log)
            if library_version(part) != apm_library.SHIM_VERSION:
                raise BuildError(
                    f"the built library does not load as version "
                    f"{apm_library.SHIM_VERSION} (its log is {log.path})"
                )
        except BuildError as exc:
            exc.lasting = True  # the same sources and tools would fail again
            raise
        part.chmod(0o755)  # mkstemp made it private
        os.replace(part, target)
        _remove_other_versions(target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return target


def _remove_other_versions(target: Path) -> None:
    """The libraries of other versions of the entry points or other recipes beside `target`,
    with their logs and notes: never loaded again (apm_native loads `target` only)."""
    own = re.compile(
        r"^libppx_apm-[0-9]+(-[0-9a-f]{12}|-unknown)?"
        r"(\.so|\.dylib|\.build\.log|\.build-failed|\.build\.lock)$"
    )
    for path in target.parent.glob("libppx_apm-*"):
        if own.match(path.name) and not path.name.startswith(f"{target.stem}."):
            with contextlib.suppress(OSError):
                path.unlink()


def failure_marker(target: Path) -> Path:
    """The file that keeps why the last build of `target` failed in its compilation."""
    return target.with_name(target.stem + ".build-failed")


def _os_reason(exc: OSError) -> str:
    """An OSError as a clause: what went wrong, and where."""
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)


def command() -> str:
    """This builder as a command of this Python (another Python would build for its own)."""
    return f"{shlex.quote(sys.executable)} -m personaplex_tui.audio.apm_build"


def main(argv: list[str] | None = None) -> int:
    """Build the library where it is missing or of another version."""
    parser = argparse.ArgumentParser(
        prog=command(),
        description="Build WebRTC's audio processing with ppx-tui's tuned echo canceller.",
    )
    parser.add_argument(
        "--if-possible",
        action="store_true",
        help="a failure ends with one line saying so, after the failing step's last lines; "
        "exit status 0 (livekit's canceller is used)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if it is built")
    parser.add_argument("--quiet", action="store_true", help="no build output")
    parser.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST_FILE}")
    args = parser.parse_args(argv)
    if apm_library.switched_off():
        if not args.quiet:
            print(
                f"ppx-tui: the tuned echo canceller is switched off "
                f"({apm_library.ENV_LIBRARY}=off); nothing to build."
            )
        return 0
    target = apm_library.library_path()
    if not args.force and library_version(target) == apm_library.SHIM_VERSION:
        if not args.quiet:
            print(f"ppx-tui: the tuned echo canceller is built ({target}).")
        return 0
    failed = failure_marker(target)
    if args.if_possible and not args.force and failed.is_file():
        # A build that failed is not tried again at every `./dev app` (minutes each time).
        reason = failed.read_text(errors="replace").strip() or "it failed"
        print(
            f"ppx-tui: the tuned echo canceller was not built ({reason}); livekit's is used "
            f"({command()} tries again).",
            file=sys.stderr,
        )
        return 0
    started = time.monotonic()
    try:
        built = install(find_tools(tool_search_path()), args.sdist, args.quiet, args.force)
    except (BuildError, OSError) as exc:
        reason = str(exc) if isinstance(exc, BuildError) else _os_reason(exc)
        if getattr(exc, "lasting", False):
            with contextlib.suppress(OSError):
                failed.write_text(reason + "\n")
        if args.if_possible:
            print(
                f"ppx-tui: the tuned echo canceller was not built ({reason}); livekit's is used.",
                file=sys.stderr,
            )
            return 0
        print(f"ppx-tui: the tuned echo canceller was not built: {reason}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppx-tui: interrupted.", file=sys.stderr)
        return 130
    failed.unlink(missing_ok=True)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    print(f"ppx-tui: the tuned echo canceller is built: {built} ({minutes} min {seconds} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
