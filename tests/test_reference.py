"""The reference fetcher: pinned archives are verified, missing ones fail under CI."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests import reference


def _archive(folder: Path, files: dict[str, bytes]) -> Path:
    target = folder / "pkg-1.0.tgz"
    with tarfile.open(target, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, bytes]]:
    """A registry stand-in: `_download` copies a local archive instead of calling npm."""
    source = tmp_path / "source"
    source.mkdir()
    files = {"data/keep.json": b"{}", "data/other.ics": b"BEGIN", "skip.txt": b"no"}
    archive = _archive(source, files)
    monkeypatch.setattr(reference, "CACHE", tmp_path / "cache")

    def download(ref: reference.Reference, into: Path) -> Path:
        copy = into / archive.name
        copy.write_bytes(archive.read_bytes())
        return copy

    monkeypatch.setattr(reference, "_download", download)
    return archive, files


def _ref(sha256: str) -> reference.Reference:
    return reference.Reference("pkg", "npm", "pkg@1.0", sha256, ("data/keep.json", ".ics"), "")


def test_fetch_unpacks_the_pinned_members_only(
    fake: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, _ = fake
    ref = _ref(hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(reference.REFERENCES, "pkg", ref)
    folder = reference.fetch(ref)
    assert (folder / "data" / "keep.json").read_bytes() == b"{}"
    assert (folder / "data" / "other.ics").read_bytes() == b"BEGIN"
    assert not (folder / "skip.txt").exists()
    assert reference.path("pkg") == folder


def test_an_archive_that_does_not_match_its_hash_is_refused(
    fake: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _ref("0" * 64)
    monkeypatch.setitem(reference.REFERENCES, "pkg", ref)
    with pytest.raises(reference.ReferenceMissing, match="does not match the pinned"):
        reference.fetch(ref)
    with pytest.raises(
        reference.ReferenceMissing, match=r"run `uv run python -m tests\.reference`"
    ):
        reference.path("pkg")


def test_a_reference_fetched_for_another_pin_counts_as_missing(
    fake: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, _ = fake
    ref = _ref(hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(reference.REFERENCES, "pkg", ref)
    reference.fetch(ref)
    monkeypatch.setitem(reference.REFERENCES, "pkg", _ref("1" * 64))
    with pytest.raises(reference.ReferenceMissing):
        reference.path("pkg")


def test_missing_reference_fails_under_ci_and_skips_with_the_command_locally(
    fake: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(reference.REFERENCES, "pkg", _ref("2" * 64))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        reference.require("pkg")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"uv run python -m tests\.reference"):
        reference.require("pkg")


def test_every_pin_names_a_version_and_a_full_sha256() -> None:
    for ref in reference.REFERENCES.values():
        assert ref.registry in {"npm", "pypi"}
        assert ("@" in ref.spec.lstrip("@")) if ref.registry == "npm" else ("==" in ref.spec)
        assert len(ref.sha256) == 64
        int(ref.sha256, 16)
