"""CI check: every runtime dependency, and each of theirs, has a wheel on the package index for
macOS arm64 and Linux x86_64 on Python 3.10-3.13, so that `pip install` never has to build one.

For each target, pip picks the newest wheel of each requirement (`pip install --dry-run --target
--no-deps --only-binary=:all: --platform ... --python-version ...`: wheel metadata only, nothing
is downloaded in full or installed). pip would evaluate environment markers for this machine, so
this script evaluates them for the target itself (`mlx` on macOS, `mlx[cpu]` on Linux, `tomli`
below 3.11) and walks each wheel's own requirements the same way. pip runs isolated from local
indexes and find-links of this machine's pip configuration, against its index url (PyPI unless
configured otherwise). Exit status 1 names every requirement without such a wheel.

Usage: python .ci/check_wheels.py [pyproject.toml]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PYPI = "https://pypi.org/simple"
# pip's words when the index cannot be asked at all (it then also says no version was found).
UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "SSLError", "ConnectTimeout")
# MLX's oldest macOS (14) and its Linux wheels' glibc (2.35); pip expands macOS versions itself.
MAC_PLATFORMS = ("macosx_14_0_arm64",)
LINUX_PLATFORMS = tuple(f"manylinux_2_{v}_x86_64" for v in range(35, 16, -1)) + (
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


@dataclass(frozen=True)
class Target:
    """One platform and Python version that users install on."""

    os: str  # "macOS arm64" or "Linux x86_64"
    python: str  # "3.12"

    @property
    def platforms(self) -> tuple[str, ...]:
        return MAC_PLATFORMS if self.os.startswith("macOS") else LINUX_PLATFORMS

    @property
    def markers(self) -> dict[str, str]:
        """The PEP 508 marker environment of a CPython of this version on this platform."""
        mac = self.os.startswith("macOS")
        return {
            "sys_platform": "darwin" if mac else "linux",
            "platform_system": "Darwin" if mac else "Linux",
            "platform_machine": "arm64" if mac else "x86_64",
            "os_name": "posix",
            "platform_release": "",
            "platform_version": "",
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "platform_python_implementation": "CPython",
        }

    def __str__(self) -> str:
        return f"{self.os}, Python {self.python}"


@dataclass
class Outcome:
    """What one target resolved to."""

    target: Target
    wheels: dict[str, str] = field(default_factory=dict)  # name -> wheel file name
    missing: dict[str, str] = field(default_factory=dict)  # requirement -> pip's reason
    error: str = ""  # why the index could not be asked at all


def pip_settings() -> list[str]:
    """Index url, certificate bundle and timeout as this machine's pip is configured (pip's
    `config list` shows environment values as `:env:.key`, config files' as `<section>.key`)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    from_env: dict[str, str] = {}
    from_files: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        source, _, name = key.rpartition(".")
        (from_env if source == ":env:" else from_files).setdefault(name, value.strip("'\""))
    values = {**from_files, **from_env}
    index = values.get("index-url", PYPI).split()[0]
    args = ["--index-url", index, "--timeout", "30", "--retries", "2"]
    if values.get("cert"):
        args += ["--cert", values["cert"]]
    return args


def pip_report(reqs: list[Requirement], target: Target, settings: list[str]) -> tuple[dict, str]:
    """pip's installation report for `reqs` on `target` ({} and pip's error when it fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--quiet"]
        command += ["--target", str(Path(tmp) / "never"), "--report", str(report)]
        command += ["--no-deps", "--ignore-installed", "--only-binary=:all:"]
        command += ["--python-version", target.python, "--implementation", "cp"]
        for platform in target.platforms:
            command += ["--platform", platform]
        command += settings + [str(r) for r in reqs]
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no config file, local index or link
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            return json.loads(report.read_text()), ""
        if any(s in proc.stderr for s in UNREACHABLE):
            raise ConnectionError(f"pip could not reach {settings[1]}")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        return {}, (errors[0] if errors else proc.stderr.strip()[-300:])


def resolve(target: Target, direct: list[Requirement], settings: list[str]) -> Outcome:
    """Walk the requirement tree on `target`, one pip call per level (per requirement on failure)."""
    outcome = Outcome(target)
    env = target.markers
    pending = [r for r in direct if r.marker is None or r.marker.evaluate(env)]
    done: set[str] = set()
    while pending:
        batch: list[Requirement] = []
        for req in pending:
            req.marker = None
            if str(req) not in done:
                done.add(str(req))
                batch.append(req)
        pending = []
        if not batch:
            break
        try:
            report, error = pip_report(batch, target, settings)
            for req in batch if error else ():  # which of them has no wheel
                report_one, error_one = pip_report([req], target, settings)
                if error_one:
                    outcome.missing[str(req)] = error_one
                else:
                    report.setdefault("install", []).extend(report_one["install"])
        except ConnectionError as e:
            outcome.error = str(e)
            return outcome
        extras: dict[str, set[str]] = {}
        for req in batch:
            extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
        for item in report.get("install", []):
            name = canonicalize_name(item["metadata"]["name"])
            outcome.wheels[name] = item["download_info"]["url"].rsplit("/", 1)[-1]
            wanted = extras.get(name, set()) or {""}
            for line in item["metadata"].get("requires_dist", []):
                dep = Requirement(line)
                if dep.marker is None or any(
                    dep.marker.evaluate({**env, "extra": e}) for e in wanted
                ):
                    pending.append(dep)
    return outcome


def fresh(reqs: list[Requirement]) -> list[Requirement]:
    """Copies (`resolve` drops their markers once evaluated)."""
    return [Requirement(str(r)) for r in reqs]


def main(argv: list[str]) -> int:
    pyproject = Path(argv[1] if len(argv) > 1 else Path(__file__).parents[1] / "pyproject.toml")
    direct = [
        Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    ]
    targets = [Target(os, py) for os in ("macOS arm64", "Linux x86_64") for py in PYTHONS]
    settings = pip_settings()
    print(
        f"Checking wheels of {len(direct)} runtime dependencies on {settings[1]} for {len(targets)} targets"
    )
    start = time.perf_counter()
    with ThreadPoolExecutor(len(targets)) as pool:
        outcomes = list(pool.map(lambda t: resolve(t, fresh(direct), settings), targets))
    failed: set[str] = set()
    unreachable = False
    for o in outcomes:
        if o.error:
            print(f"  {o.target}: {o.error}")
            unreachable = True
            continue
        status = "ok" if not o.missing else "MISSING " + ", ".join(sorted(o.missing))
        print(f"  {o.target}: {len(o.wheels)} wheels, {status}")
        for req, reason in sorted(o.missing.items()):
            print(f"      {req}: {reason}")
            failed.add(canonicalize_name(Requirement(req).name))
    seconds = time.perf_counter() - start
    if unreachable:
        print(f"The package index {settings[1]} could not be reached, so nothing was checked.")
        return 1
    if failed:
        print(f"No wheel for: {', '.join(sorted(failed))} ({seconds:.0f} s).")
        return 1
    print(f"Every dependency has a wheel on every target ({seconds:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
