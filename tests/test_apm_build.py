"""The builder of the tuned WebRTC library (audio/apm_build.py), without building WebRTC.

The sdist is a small fake whose hash the tests pin in its place, the tools are scripts, and a
"built" library is a few lines of C compiled with the system's C compiler: the checks, the
refusals, the skip of a library already built and the atomic install are real. CI builds the
real library once (`./dev setup-test`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.client
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from personaplex_tui.audio import apm_build, apm_library

FAKE_LIBRARY = """
int ppx_apm_version(void) { return VERSION; }
void *ppx_apm_create(void) { return 0; }
int ppx_apm_reverse(void) { return 0; }
int ppx_apm_forward(void) { return 0; }
void ppx_apm_destroy(void) {}
"""
TREE = apm_build.SDIST_TREE


def compile_fake(out: Path, version: int) -> None:
    """A library exporting the five entry points, ppx_apm_version returning `version`."""
    c = out.parent / f"fake{version}.c"
    c.write_text(FAKE_LIBRARY)
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "the tests need a C compiler (cc)"
    subprocess.run(
        [cc, "-shared", "-fPIC", f"-DVERSION={version}", str(c), "-o", str(out)], check=True
    )


def make_sdist(path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


GOOD_MEMBERS = {
    "aec_audio_processing-1.0.1/setup.py": b"raise SystemExit\n",
    f"{TREE}/meson.build": b"project('x')\n",
    f"{TREE}/webrtc/a.cc": b"int a;\n",
}


def pin(monkeypatch, sdist: Path) -> None:
    monkeypatch.setattr(apm_build, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())


def fake_tools(folder: Path, meson: str = "exit 0", with_compiler: bool = True) -> Path:
    """meson, ninja (and c++) as shell scripts in `folder`; meson runs the `meson` shell code."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {"meson": meson, "ninja": "exit 0"}
    if with_compiler:
        scripts["c++"] = "exit 0"
    for name, body in scripts.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return folder


@pytest.fixture
def target(tmp_path, monkeypatch) -> Path:
    """The library's path (PPX_APM_LIBRARY), a private temp folder, and no download."""
    path = tmp_path / "lib" / "libppx_apm-test.so"
    monkeypatch.setenv(apm_library.ENV_LIBRARY, str(path))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))

    def no_download(folder: Path) -> Path:
        raise AssertionError("the tests never download")

    monkeypatch.setattr(apm_build, "download_sdist", no_download)
    return path


def use_tools(monkeypatch, folder: Path) -> None:
    monkeypatch.setattr(apm_build, "tool_search_path", lambda: str(folder))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_an_sdist_of_another_hash_is_refused_in_one_sentence_and_nothing_is_installed(
    tmp_path, target, monkeypatch, capsys
):
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin", meson=f"touch {tmp_path}/meson-ran"))
    assert apm_build.main(["--sdist", str(sdist)]) == 2
    line = one_line(capsys.readouterr().err)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert line == (
        f"ppx-tui: the tuned echo canceller was not built: {apm_build.SDIST_FILE} has sha256 "
        f"{digest}, not the expected {apm_build.SDIST_SHA256}."
    )
    assert not (tmp_path / "meson-ran").exists()
    assert list(target.parent.glob("*.so*")) == []
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "bad, links",
    [
        ({"../evil.txt": b"x"}, ()),
        ({"ABSOLUTE": b"x"}, ()),
        ({f"{TREE}/../../../evil.txt": b"x"}, ()),
        ({}, (f"{TREE}/webrtc/link.h",)),
    ],
)
def test_an_unsafe_member_refuses_the_whole_sdist(
    tmp_path, target, monkeypatch, capsys, bad, links
):
    # an absolute member names a file of its own under tmp_path: where it would land is known
    absolute = tmp_path / "absolute" / f"evil-{os.getpid()}.txt"
    bad = {(str(absolute) if name == "ABSOLUTE" else name): data for name, data in bad.items()}
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, {**GOOD_MEMBERS, **bad}, links)
    with pytest.raises(apm_build.BuildError, match="unsafe path|link or special file"):
        apm_build.extract_tree(sdist, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not absolute.exists() and not (tmp_path / "absolute").exists()
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin", meson=f"touch {tmp_path}/meson-ran"))
    assert apm_build.main(["--sdist", str(sdist)]) == 2
    assert "holds a" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "meson-ran").exists()
    assert not target.exists()


def test_the_tree_alone_is_extracted_with_its_files(tmp_path):
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    root = apm_build.extract_tree(sdist, tmp_path / "out")
    assert root == tmp_path / "out" / "webrtc-audio-processing"
    assert (root / "webrtc" / "a.cc").read_bytes() == b"int a;\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["webrtc-audio-processing"]


def test_a_built_library_of_this_version_is_not_rebuilt(tmp_path, target, monkeypatch, capsys):
    target.parent.mkdir()
    compile_fake(target, apm_library.SHIM_VERSION)
    before = target.stat().st_mtime_ns

    def must_not_build(*args):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(apm_build, "find_tools", must_not_build)
    monkeypatch.setattr(apm_build, "install", must_not_build)
    assert apm_build.main([]) == 0
    assert (
        one_line(capsys.readouterr().out)
        == f"ppx-tui: the tuned echo canceller is built ({target})."
    )
    assert target.stat().st_mtime_ns == before


def test_the_module_runs_as_a_command(tmp_path, target):
    target.parent.mkdir()
    compile_fake(target, apm_library.SHIM_VERSION)
    env = dict(os.environ, **{apm_library.ENV_LIBRARY: str(target)})
    done = subprocess.run(
        [sys.executable, "-m", "personaplex_tui.audio.apm_build", "--if-possible"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "is built" in done.stdout


@pytest.mark.parametrize("force", [False, True])
def test_another_version_or_force_rebuilds_and_installs_atomically(
    tmp_path, target, monkeypatch, capsys, force
):
    target.parent.mkdir()
    compile_fake(target, apm_library.SHIM_VERSION + (0 if force else 1))
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    built: list[Path] = []

    def fake_build(tree: Path, tools: apm_build.Tools, out: Path, log: apm_build.Log) -> None:
        assert (tree / "meson.build").is_file()
        assert out.name.endswith(".part") and out.parent == target.parent
        compile_fake(out, apm_library.SHIM_VERSION)
        built.append(out)

    monkeypatch.setattr(apm_build, "build_library", fake_build)
    args = ["--sdist", str(sdist)] + (["--force"] if force else [])
    assert apm_build.main(args) == 0
    assert len(built) == 1
    assert apm_build.library_version(target) == apm_library.SHIM_VERSION
    assert f"is built: {target} (" in capsys.readouterr().out.splitlines()[-1]
    assert not built[0].exists()  # renamed into place
    assert os.listdir(tmp_path / "tmp") == []


def test_a_new_build_removes_the_files_of_other_versions(tmp_path, monkeypatch, capsys):
    """A version 1 library left beside a new version's is never loaded again: the build that
    replaces it removes it, with its log and note; other files of the folder stay."""
    folder = tmp_path / "lib"
    folder.mkdir()
    version = apm_library.SHIM_VERSION
    target = folder / f"libppx_apm-{version}.so"
    monkeypatch.setenv(apm_library.ENV_LIBRARY, str(target))
    ends = (".so", ".build.log", ".build-failed", ".build.lock")
    old = [f"libppx_apm-{version - 1}{end}" for end in ends]
    old += [f"libppx_apm-{version}-0123456789ab{end}" for end in (".so", ".build.log")]
    kept = ["libppx_apm-notes.txt", "other.so", f"libppx_apm-{version}.build.log"]
    for name in old + kept:
        (folder / name).write_text("x")
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    compile_fake(tmp_path / "built.so", version)
    monkeypatch.setattr(
        apm_build,
        "build_library",
        lambda tree, tools, out, log: shutil.copy(tmp_path / "built.so", out),
    )
    assert apm_build.main(["--sdist", str(sdist), "--quiet"]) == 0
    lock = f"{target.stem}.build.lock"  # this version's: kept for the next build
    assert sorted(p.name for p in folder.iterdir()) == sorted([target.name, lock, *kept])
    capsys.readouterr()


def test_a_library_that_does_not_load_is_not_installed(tmp_path, target, monkeypatch, capsys):
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    monkeypatch.setattr(
        apm_build, "build_library", lambda tree, tools, out, log: out.write_bytes(b"no")
    )
    assert apm_build.main(["--sdist", str(sdist)]) == 2
    assert "does not load as version" in one_line(capsys.readouterr().err)
    assert list(target.parent.glob("*.so*")) == []


def test_if_possible_turns_a_failure_into_one_sentence_and_exit_0(
    tmp_path, target, monkeypatch, capsys
):
    use_tools(monkeypatch, tmp_path / "empty")
    assert apm_build.main(["--if-possible"]) == 0
    assert one_line(capsys.readouterr().err) == (
        "ppx-tui: the tuned echo canceller was not built (meson and ninja not found: pip install "
        "meson ninja); livekit's is used."
    )
    assert apm_build.main([]) == 2
    assert "pip install meson ninja." in one_line(capsys.readouterr().err)


def test_missing_tools_name_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    folder = fake_tools(tmp_path / "bin", with_compiler=False)
    with pytest.raises(apm_build.BuildError, match=r"apt install g\+\+.*xcode-select --install"):
        apm_build.find_tools(str(folder))
    (folder / "ninja").unlink()
    with pytest.raises(apm_build.BuildError, match="^ninja not found: pip install meson ninja$"):
        apm_build.find_tools(str(folder))
    tools = apm_build.find_tools(str(fake_tools(tmp_path / "all")))
    assert Path(tools.cxx).name == "c++" and Path(tools.meson).name == "meson"


def test_a_meson_failure_shows_its_output_and_log(tmp_path, target, monkeypatch, capsys):
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(
        monkeypatch, fake_tools(tmp_path / "bin", meson="echo 'ERROR: no compiler works'; exit 1")
    )
    assert apm_build.main(["--sdist", str(sdist), "--quiet", "--if-possible"]) == 0
    out = capsys.readouterr()
    log = target.parent / f"{target.stem}.build.log"
    assert "ERROR: no compiler works" in out.err.splitlines()[0]
    assert out.err.splitlines()[-1] == (
        "ppx-tui: the tuned echo canceller was not built (meson setup failed (exit 1; its log is "
        f"{log})); livekit's is used."
    )
    assert "ERROR: no compiler works" in log.read_text()
    assert not target.exists()
    assert os.listdir(tmp_path / "tmp") == []


def test_a_failed_build_is_not_tried_again_by_if_possible_until_asked(
    tmp_path, target, monkeypatch, capsys
):
    """`./dev app` runs the build with --if-possible at every start: a compilation that failed
    is said again from its note, not run again for minutes; without --if-possible (`./dev test`,
    or by hand) it is tried again, and a success clears the note."""
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin", meson="exit 1"))
    runs = []
    real = apm_build.build_library
    monkeypatch.setattr(apm_build, "build_library", lambda *a: (runs.append(1), real(*a))[1])
    assert apm_build.main(["--sdist", str(sdist), "--quiet", "--if-possible"]) == 0
    first = capsys.readouterr().err.splitlines()[-1]
    assert apm_build.main(["--sdist", str(sdist), "--quiet", "--if-possible"]) == 0
    again = one_line(capsys.readouterr().err)
    assert len(runs) == 1
    assert again == first.replace(
        "; livekit's is used.",
        f"; livekit's is used ({shlex.quote(sys.executable)} -m personaplex_tui.audio.apm_build "
        "tries again).",
    )
    monkeypatch.setattr(
        apm_build,
        "build_library",
        lambda tree, tools, out, log: (runs.append(1), compile_fake(out, apm_library.SHIM_VERSION)),
    )
    assert apm_build.main(["--sdist", str(sdist), "--quiet"]) == 0
    assert len(runs) == 2 and target.is_file()
    assert not apm_build.failure_marker(target).exists()


def test_a_failed_download_is_tried_again_next_time(tmp_path, target, monkeypatch, capsys):
    """A download that failed (the network) leaves no note: the next start tries again."""
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))

    def offline(folder: Path) -> Path:
        raise apm_build.BuildError("could not download it (no network)")

    monkeypatch.setattr(apm_build, "download_sdist", offline)
    assert apm_build.main(["--quiet", "--if-possible"]) == 0
    assert not apm_build.failure_marker(target).exists()
    capsys.readouterr()


def fake_build_dir(build: Path, tree: Path) -> None:
    """compile_commands.json and intro-targets.json as meson writes them."""
    (build / "meson-info").mkdir(parents=True)
    command = (
        "ccache c++ -Iwebrtc -I../webrtc -D_GLIBCXX_ASSERTIONS=1 -std=c++20 -O3 "
        "-DWEBRTC_LIBRARY_IMPL -DWEBRTC_ENABLE_SYMBOL_EXPORT -DNDEBUG -DWEBRTC_POSIX -DWEBRTC_MAC "
        "-DWEBRTC_APM_DEBUG_DUMP=0 -o x.o -c ../webrtc/modules/audio_processing/aec3/echo_canceller3.cc"
    )
    entry = {
        "directory": str(build),
        "command": command,
        "file": "../webrtc/modules/audio_processing/aec3/echo_canceller3.cc",
    }
    (build / "compile_commands.json").write_text(json.dumps([entry]))
    targets = [
        {
            "type": "static library",
            "filename": [str(build / "absl/libabsl_base.a")],
            "target_sources": [],
        },
        {
            "type": "static library",
            "filename": [str(build / "libwebrtc-audio-processing-2.a")],
            "target_sources": [],
        },
        {
            "type": "executable",
            "filename": [str(build / "run-offline")],
            "target_sources": [
                {
                    "linker": ["c++"],
                    "parameters": [
                        "-Wl,--as-needed",
                        "x.a",
                        "-lrt",
                        "-framework",
                        "Foundation",
                        "-pthread",
                    ],
                }
            ],
        },
    ]
    (build / "meson-info" / "intro-targets.json").write_text(json.dumps(targets))


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_the_shim_is_compiled_as_webrtc_was_and_exports_its_entry_points_alone(
    tmp_path, monkeypatch, platform
):
    tree = tmp_path / "webrtc-audio-processing"
    build = tree / "build"
    fake_build_dir(build, tree)
    monkeypatch.setattr(sys, "platform", platform)
    command = apm_build.link_shim(build, tree, tmp_path / "out.so")
    assert command[:2] == ["ccache", "c++"]
    assert "-std=c++20" in command and "-DWEBRTC_MAC" in command and "-DNDEBUG" in command
    assert "-DWEBRTC_APM_DEBUG_DUMP=0" in command and "-D_GLIBCXX_ASSERTIONS=1" in command
    assert not {"-DWEBRTC_LIBRARY_IMPL", "-DWEBRTC_ENABLE_SYMBOL_EXPORT", "-O3"} & set(command)
    assert (
        f"-I{tree}" in command
        and f"-I{tree / 'webrtc'}" in command
        and f"-I{build / 'webrtc'}" in command
    )
    assert str(apm_build.SHIM_SOURCE) in command and apm_build.SHIM_SOURCE.is_file()
    assert "-fvisibility=hidden" in command
    archives = [str(build / "absl/libabsl_base.a"), str(build / "libwebrtc-audio-processing-2.a")]
    assert command.count("-lrt") == 1 and command.count("-pthread") == 1
    if platform == "linux":
        i = command.index("-Wl,--start-group")
        assert command[i + 1 : i + 4] == [*archives, "-Wl,--end-group"]
        assert "-shared" in command and "-Wl,--exclude-libs,ALL" in command
    else:
        assert "-dynamiclib" in command and set(archives) <= set(command)
        exports = command[-1].removeprefix("-Wl,-exported_symbols_list,")
        assert Path(exports).read_text().split() == [f"_{n}" for n in apm_build.EXPORTS]


class FakeAnswer(io.BytesIO):
    """What urlopen answers: a readable context manager."""


def full_url(request: urllib.request.Request | str) -> str:
    """The address urlopen was asked for (a Request or a plain address)."""
    return request if isinstance(request, str) else request.full_url


def test_the_sdist_is_found_on_the_index_and_a_failed_download_is_one_sentence(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    page = (
        '<a href="../../files/aec_audio_processing-1.0.0.tar.gz#sha256=00">old</a>\n'
        f'<a href="../../files/{apm_build.SDIST_FILE}#sha256=11">this</a>\n'
    )
    asked: list[str] = []

    def urlopen(request: urllib.request.Request | str, timeout: float) -> FakeAnswer:
        url = full_url(request)
        asked.append(url)
        if url.endswith("/"):
            return FakeAnswer(page.encode())
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(apm_build.urllib.request, "urlopen", urlopen)
    with pytest.raises(apm_build.BuildError) as refused:
        apm_build.download_sdist(tmp_path)
    assert asked == [
        "https://mirror.example/simple/aec-audio-processing/",
        f"https://mirror.example/files/{apm_build.SDIST_FILE}#sha256=11",
    ]
    assert str(refused.value) == (
        f"could not download {apm_build.SDIST_FILE} (Name or service not known)"
    )


def test_a_library_folder_that_cannot_be_made_is_one_sentence(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(apm_library.ENV_LIBRARY, str(tmp_path / "file" / "lib.so"))
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    assert apm_build.main([]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("ppx-tui: the tuned echo canceller was not built: ")
    assert line.endswith(f": {tmp_path / 'file'}.")


FAKE_MESON = """
[ "$1" = setup ] || exit 1
build="$2"; mkdir -p "$build/meson-info"; real="$(cd "$build" && pwd -P)"
printf '[{"type": "static library", "filename": ["%s/libwebrtc-audio-processing-2.a"]}]' \\
    "$real" > "$build/meson-info/intro-targets.json"
printf '[{"directory": "%s", "file": "../webrtc/aec3/echo_canceller3.cc", "command": "%s -DX=1 -c f.cc"}]' \\
    "$real" "$(dirname "$0")/c++" > "$build/compile_commands.json"
"""


def test_the_build_runs_meson_then_ninja_on_the_libraries_then_links_the_shim(
    tmp_path, monkeypatch
):
    """As on macOS, the temp folder is reached through a symlink: ninja still gets its targets
    relative to the build folder."""
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    tree = tmp_path / "via" / "webrtc-audio-processing"
    tree.mkdir()
    bin_ = fake_tools(tmp_path / "bin", meson=FAKE_MESON)
    (bin_ / "ninja").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/ninja.args\n')
    (bin_ / "c++").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/cxx.args\n')
    tools = apm_build.find_tools(str(bin_))
    log = apm_build.Log(tmp_path / "build.log", quiet=True)
    apm_build.build_library(tree, tools, tmp_path / "out.part", log)
    build = tree / "build"
    assert (tmp_path / "ninja.args").read_text().split() == [
        "-C",
        str(build),
        "libwebrtc-audio-processing-2.a",
    ]
    cxx = (tmp_path / "cxx.args").read_text().split()
    assert "-DX=1" in cxx and str(apm_build.SHIM_SOURCE) in cxx
    assert cxx[cxx.index("-o") + 1] == str(tmp_path / "out.part")
    assert "--wrap-mode=nodownload" in log.path.read_text()


def test_an_edited_shim_or_build_gets_another_library_name(tmp_path, monkeypatch):
    """The library's name carries a digest of ppx_apm.cc and apm_build.py: a library built from
    other sources is never taken for the current one (it is rebuilt, and the old one removed)."""
    monkeypatch.delenv(apm_library.ENV_LIBRARY, raising=False)
    shim, build = tmp_path / "ppx_apm.cc", tmp_path / "apm_build.py"
    shim.write_text("int a;\n")
    build.write_text("# build\n")
    monkeypatch.setattr(apm_library, "RECIPE", (shim, build))
    apm_library.recipe_digest.cache_clear()
    try:
        first = apm_library.library_path()
        assert re.fullmatch(r"libppx_apm-[0-9]+-[0-9a-f]{12}\.(so|dylib)", first.name)
        shim.write_text("int b;\n")
        apm_library.recipe_digest.cache_clear()
        assert apm_library.library_path() != first
        build.write_text("# build, edited\n")
        apm_library.recipe_digest.cache_clear()
        third = apm_library.library_path()
        assert len({first, third}) == 2 and third.parent == first.parent
    finally:
        apm_library.recipe_digest.cache_clear()


def test_a_relative_library_path_is_made_absolute(tmp_path, monkeypatch):
    """ctypes looks a bare file name up on the system's library path, not the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(apm_library.ENV_LIBRARY, "libppx_apm-mine.so")
    assert apm_library.library_path() == tmp_path.resolve() / "libppx_apm-mine.so"


def test_meson_builds_the_bundled_abseil_even_where_the_system_has_one(tmp_path):
    """The sdist's meson.build takes a system abseil (pkg-config) first: its archives would be
    missing from the link (--no-undefined fails) or the library would need the system's."""
    bin_ = fake_tools(tmp_path / "bin", meson=f'echo "$@" > {tmp_path}/meson.args; exit 1')
    tree = tmp_path / "webrtc-audio-processing"
    tree.mkdir()
    log = apm_build.Log(tmp_path / "build.log", quiet=True)
    with pytest.raises(apm_build.BuildError, match="meson setup failed"):
        apm_build.build_library(tree, apm_build.find_tools(str(bin_)), tmp_path / "out", log)
    args = (tmp_path / "meson.args").read_text().split()
    # the subproject's name: the sdist's subprojects/abseil-cpp.wrap
    assert args[0] == "setup" and "--force-fallback-for=abseil-cpp" in args


def test_a_second_build_waits_for_the_first_and_takes_its_library(
    tmp_path, target, monkeypatch, capsys
):
    """Two `./dev app` at once: the second waits for the first's lock, then finds the library
    built and does not build it again."""
    target.parent.mkdir()
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    built: list[Path] = []
    monkeypatch.setattr(apm_build, "build_library", lambda tree, tools, out, log: built.append(out))
    results: list[int] = []
    with target.with_name(f"{target.stem}.build.lock").open("a") as first:
        fcntl.flock(first, fcntl.LOCK_EX)  # the first build runs
        second = threading.Thread(
            target=lambda: results.append(apm_build.main(["--sdist", str(sdist), "--quiet"]))
        )
        second.start()
        second.join(0.5)
        assert second.is_alive() and built == []  # waiting
        compile_fake(target, apm_library.SHIM_VERSION)  # the first build's library
        fcntl.flock(first, fcntl.LOCK_UN)
        second.join(30)
    assert results == [0] and built == []
    assert apm_build.library_version(target) == apm_library.SHIM_VERSION
    capsys.readouterr()


def test_each_build_links_into_a_part_file_of_its_own(tmp_path, target, monkeypatch, capsys):
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))
    parts: list[Path] = []

    def fake_build(tree: Path, tools: apm_build.Tools, out: Path, log: apm_build.Log) -> None:
        parts.append(out)
        compile_fake(out, apm_library.SHIM_VERSION)

    monkeypatch.setattr(apm_build, "build_library", fake_build)
    for _ in range(2):
        assert apm_build.main(["--sdist", str(sdist), "--quiet", "--force"]) == 0
    assert len(parts) == 2 and parts[0] != parts[1]
    assert all(p.parent == target.parent and p.name.endswith(".part") for p in parts)
    assert not any(p.exists() for p in parts)
    assert os.access(target, os.R_OK | os.X_OK)
    capsys.readouterr()


def test_index_credentials_are_sent_to_their_host_alone_and_never_shown(
    tmp_path, monkeypatch, capsys
):
    """pip's PIP_INDEX_URL may carry a user and a token: they go out of the address (urllib
    takes `user:token@host` for a port) into an Authorization header for the index's host."""
    monkeypatch.setenv("PIP_INDEX_URL", "https://me:s3cr%2Ft@mirror.example/simple")
    page = (
        f'<a href="https://files.example/f/{apm_build.SDIST_FILE}">other host</a>\n'
        f'<a href="../files/{apm_build.SDIST_FILE}">this</a>\n'
    )
    asked: list[tuple[str, str | None, float]] = []

    def urlopen(request: urllib.request.Request | str, timeout: float) -> FakeAnswer:
        url = full_url(request)
        auth = None if isinstance(request, str) else request.get_header("Authorization")
        asked.append((url, auth, timeout))
        return FakeAnswer(page.encode() if url.endswith("/") else b"sdist")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert apm_build.download_sdist(tmp_path).read_bytes() == b"sdist"
    basic = "Basic " + base64.b64encode(b"me:s3cr/t").decode()
    assert asked == [
        ("https://mirror.example/simple/aec-audio-processing/", basic, 30),
        (f"https://files.example/f/{apm_build.SDIST_FILE}", None, 30),
    ]
    monkeypatch.setattr(apm_build, "SDIST_FILE", "missing.tar.gz")
    with pytest.raises(apm_build.BuildError) as refused:
        apm_build.download_sdist(tmp_path)
    assert str(refused.value) == (
        "https://***@mirror.example/simple/aec-audio-processing/ does not list missing.tar.gz"
    )


def test_a_failed_download_from_an_index_with_credentials_does_not_show_them(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(apm_library.ENV_LIBRARY, str(tmp_path / "lib" / "libppx_apm-test.so"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://me:tok3n-9876@mirror.example/simple/")
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))

    def urlopen(request: urllib.request.Request | str, timeout: float) -> FakeAnswer:
        url = full_url(request)
        http.client.HTTPSConnection(urllib.parse.urlsplit(url).netloc)  # as urlopen would
        raise urllib.error.URLError("Connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert apm_build.main(["--quiet", "--if-possible"]) == 0
    line = one_line(capsys.readouterr().err)
    assert line == (
        f"ppx-tui: the tuned echo canceller was not built (could not download "
        f"{apm_build.SDIST_FILE} (Connection refused)); livekit's is used."
    )
    assert "tok3n" not in line and "9876" not in line


def test_switched_off_there_is_nothing_to_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(apm_library.ENV_LIBRARY, "off")

    def must_not_build(*args: object) -> None:
        raise AssertionError("built")

    monkeypatch.setattr(apm_build, "find_tools", must_not_build)
    monkeypatch.setattr(apm_build, "install", must_not_build)
    assert apm_build.main(["--if-possible"]) == 0
    assert one_line(capsys.readouterr().out) == (
        "ppx-tui: the tuned echo canceller is switched off (PPX_APM_LIBRARY=off); nothing to build."
    )
    assert apm_build.main(["--quiet", "--if-possible"]) == 0
    assert capsys.readouterr() == ("", "")


def test_the_last_builds_log_stays_until_the_sources_are_here(
    tmp_path, target, monkeypatch, capsys
):
    """A .build-failed note names the log: an offline retry or a refused sdist keeps it."""
    log = target.parent / f"{target.stem}.build.log"
    log.parent.mkdir()
    log.write_text("$ meson setup\nERROR: the last build's reason\n")
    use_tools(monkeypatch, fake_tools(tmp_path / "bin"))

    def offline(folder: Path) -> Path:
        raise apm_build.BuildError("could not download it (no network)")

    monkeypatch.setattr(apm_build, "download_sdist", offline)
    assert apm_build.main(["--quiet", "--if-possible"]) == 0
    assert "the last build's reason" in log.read_text()
    other = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)  # not the pinned hash
    assert apm_build.main(["--quiet", "--sdist", str(other)]) == 2
    assert "the last build's reason" in log.read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    "targets, commands",
    [
        ("{", "[]"),
        ('[{"type": "static library"}]', "[]"),
        (
            '[{"type": "static library", "filename": ["@REAL@/libwebrtc-audio-processing-2.a"]}]',
            '[{"directory": "@REAL@"}]',
        ),
        (
            '[{"type": "static library", "filename": ["@REAL@/libwebrtc-audio-processing-2.a"]}]',
            '[{"directory": "@REAL@", "file": "../aec3/echo_canceller3.cc", "command": "c++"}]',
        ),
    ],
)
def test_meson_files_not_as_expected_are_one_sentence(
    tmp_path, target, monkeypatch, capsys, targets, commands
):
    (tmp_path / "targets.json").write_text(targets)
    (tmp_path / "commands.json").write_text(commands)
    meson = (
        'mkdir -p "$2/meson-info"; real="$(cd "$2" && pwd -P)"\n'
        f'sed "s|@REAL@|$real|g" {tmp_path}/targets.json > "$2/meson-info/intro-targets.json"\n'
        f'sed "s|@REAL@|$real|g" {tmp_path}/commands.json > "$2/compile_commands.json"'
    )
    sdist = make_sdist(tmp_path / apm_build.SDIST_FILE, GOOD_MEMBERS)
    pin(monkeypatch, sdist)
    use_tools(monkeypatch, fake_tools(tmp_path / "bin", meson=meson))
    assert apm_build.main(["--sdist", str(sdist), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(
        "ppx-tui: the tuned echo canceller was not built: meson's description of the build "
    )
    assert "is not as expected (" in line and not target.exists()


def test_if_possible_says_what_a_failure_prints():
    """--quiet --if-possible still shows the failing step's last lines before the sentence."""
    help_text = " ".join(apm_build_help().split())
    assert "a failure ends with one line saying so, after the failing step's last lines" in (
        help_text
    )


def apm_build_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "personaplex_tui.audio.apm_build", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout
