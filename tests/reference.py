"""Reference material the fidelity tests hold the emulators against, fetched by one command.

    uv run python -m tests.reference          # fetch what is missing, verify every hash
    uv run python -m tests.reference --list   # what is fetched, from where, and why

Each reference is one package archive from a package registry (npm or PyPI), pinned by version
and by the sha256 of the archive, downloaded with the registry's own client (`npm pack`,
`pip download`), checked, and unpacked under `tests/.cache/reference/NAME/` (the folder CI
caches). The tests never download anything: they read that folder through `require(NAME)`.

When a reference is missing (or was fetched for another pin), `require` fails the test when
the `CI` environment variable is set, and otherwise skips it with the command above: a runner
that cannot reach the registries never passes by dropping the fidelity checks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

__all__ = [
    "CACHE",
    "FETCH_COMMAND",
    "REFERENCES",
    "Reference",
    "ReferenceMissing",
    "fetch",
    "path",
    "require",
    "require_stdlib_email",
]

CACHE = Path(__file__).resolve().parent / ".cache" / "reference"
FETCH_COMMAND = "uv run python -m tests.reference"
_STAMP = ".sha256"


@dataclass(frozen=True)
class Reference:
    name: str
    registry: str  # "npm" or "pypi"
    spec: str  # what the registry's client is asked for
    sha256: str  # of the archive the registry serves for that version
    members: tuple[str, ...]  # paths (below the archive's top folder) that are unpacked
    why: str

    @property
    def folder(self) -> Path:
        return CACHE / self.name


REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        Reference(
            "octokit-openapi",
            "npm",
            "@octokit/openapi@23.0.2",
            "71a18407dd5e8464f4e0525daf03deabbe65abd9287d6adc7b5d98f516cd0d0c",
            ("generated/api.github.com.json",),
            "GitHub's OpenAPI description: the example payloads the GitHub emulator must cover",
        ),
        Reference(
            "octokit-fixtures",
            "npm",
            "@octokit/fixtures@23.1.2",
            "5a9b0221d7c18f593dc57b5f292e946e8cadfac2b0d4578b38d7e9bd63836c64",
            ("scenarios/api.github.com/",),
            "recorded api.github.com traffic: the GitHub emulator's error shapes",
        ),
        Reference(
            "twitter-api-sdk",
            "npm",
            "twitter-api-sdk@1.2.1",
            "726474094a9a6b458d2bb2287b9775b4509e7090783f052945c347337cedd6cd",
            ("dist/gen/openapi-types.d.ts",),
            "X's own SDK: the OpenAPI types the X emulator's payload keys must be declared in",
        ),
        Reference(
            "recurring-ical-events",
            "pypi",
            "recurring-ical-events==3.8.2",
            "e731af31d0b7dec5cd47a1defacd8549e2f36fab1c1995e8b9f042822a0acf8e",
            (".ics",),
            "calendars exported by Google Calendar (in the package's tests): real events to serve",
        ),
        Reference(
            "mail-parser",
            "pypi",
            "mail-parser==4.8.0",
            "602e659b159652d378b0f9cce2d682bee692bedae72687786e2b2e52eaeb9afc",
            ("tests/mails/",),
            "real and malformed mail (in the package's tests): the Gmail sync's corpus",
        ),
    )
}


class ReferenceMissing(Exception):
    """A reference is not in the cache (the message says how to fetch it)."""


def path(name: str) -> Path:
    """The unpacked folder of reference `name`; `ReferenceMissing` when absent or stale."""
    ref = REFERENCES[name]
    stamp = ref.folder / _STAMP
    if not stamp.is_file() or stamp.read_text().strip() != ref.sha256:
        raise ReferenceMissing(
            f"reference {ref.spec} ({ref.registry}) is not fetched: run `{FETCH_COMMAND}`"
        )
    return ref.folder


def _missing(reason: str) -> NoReturn:
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing reference fails the run)", pytrace=False)
    pytest.skip(reason)


def require(name: str) -> Path:
    """`path(name)` for a test: fails under CI, skips with the fetch command locally."""
    try:
        return path(name)
    except ReferenceMissing as exc:
        _missing(str(exc))


def require_stdlib_email() -> Path:
    """CPython's own email test messages (`test/test_email/data`), which no registry serves."""
    try:
        import test.test_email
    except ImportError as exc:
        reason = f"this Python ships without its test package ({exc}); install it"
        import pytest

        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set)", pytrace=False)
        pytest.skip(f"{reason}, e.g. Debian's libpython3.X-testsuite")
    return Path(test.test_email.__file__).parent / "data"


def _download(ref: Reference, into: Path) -> Path:
    if ref.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise ReferenceMissing("npm is not installed")
        command = [npm, "pack", ref.spec, "--pack-destination", str(into), "--silent"]
    else:
        command = [
            *_pip(),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            ref.spec,
            "-d",
            str(into),
        ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    archives = [p for p in into.iterdir() if p.name.endswith((".tgz", ".tar.gz"))]
    if result.returncode != 0 or len(archives) != 1:
        detail = (result.stderr or result.stdout).strip()[-400:]
        raise ReferenceMissing(f"{' '.join(command[:3])} failed: {detail}")
    return archives[0]


def _pip() -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ReferenceMissing("no pip to download PyPI packages with")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wanted(member: tarfile.TarInfo, ref: Reference) -> str | None:
    """The member's path below the top folder when `ref` keeps it, else None."""
    if not member.isfile():
        return None
    _, _, inner = member.name.partition("/")
    for want in ref.members:
        if want.startswith(".") and inner.endswith(want):
            return inner
        if inner == want or (want.endswith("/") and inner.startswith(want)):
            return inner
    return None


def fetch(ref: Reference) -> Path:
    """Download, verify and unpack `ref` unless the cache already holds this pin."""
    try:
        return path(ref.name)
    except ReferenceMissing:
        pass
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        download = Path(tmp) / "download"
        download.mkdir()
        archive = _download(ref, download)
        got = _sha256(archive)
        if got != ref.sha256:
            raise ReferenceMissing(
                f"{ref.spec}: archive sha256 {got} does not match the pinned {ref.sha256}"
            )
        staging = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                inner = _wanted(member, ref)
                if inner is None:
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                target = staging / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(handle.read())
        if not staging.is_dir():
            raise ReferenceMissing(f"{ref.spec}: none of {ref.members} in the archive")
        (staging / _STAMP).write_text(ref.sha256 + "\n")
        shutil.rmtree(ref.folder, ignore_errors=True)
        os.replace(staging, ref.folder)
    return ref.folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reference", description=__doc__)
    parser.add_argument("--list", action="store_true", help="print what would be fetched")
    args = parser.parse_args(argv)
    failed = 0
    for ref in REFERENCES.values():
        if args.list:
            print(f"{ref.registry:5} {ref.spec:32} sha256:{ref.sha256[:16]}…  {ref.why}")
            continue
        try:
            folder = fetch(ref)
        except (ReferenceMissing, OSError, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"FAILED {ref.spec}: {exc}", file=sys.stderr)
        else:
            print(f"ok     {ref.spec} -> {folder}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
