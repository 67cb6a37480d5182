"""The service ships under MIT: no runtime dependency may be GPL or AGPL.

Read from the installed distributions' own metadata (`License-Expression`, `License`, the
license classifiers), over the runtime closure of the project: its `Requires-Dist` without
the dependency groups, followed transitively with the markers of this interpreter. LGPL
(psycopg) is allowed: it is linked, not copied.
"""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "ingestion-service"
_COPYLEFT = re.compile(r"\b(A?GPL|GNU (Affero )?General Public License)", re.I)
_LESSER = re.compile(r"\bLGPL|Lesser General Public License|Library General Public", re.I)


def runtime_closure(project: str = PROJECT) -> dict[str, metadata.Distribution]:
    """Every installed distribution the project needs at run time, by canonical name."""
    found: dict[str, metadata.Distribution] = {}
    pending: list[tuple[str, frozenset[str]]] = [(project, frozenset())]
    while pending:
        name, extras = pending.pop()
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key in found and not extras:
            continue
        found[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            wanted = marker is None or any(
                marker.evaluate({"extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def license_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    parts = [meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
    parts += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " | ".join(part for part in parts if part.strip())


def is_copyleft(text: str) -> bool:
    """GPL or AGPL (any version), LGPL excepted."""
    return bool(_COPYLEFT.search(_LESSER.sub("", text)))


def test_the_license_check_recognises_gpl() -> None:
    assert is_copyleft("GPL-3.0-or-later")
    assert is_copyleft("License :: OSI Approved :: GNU General Public License v3 (GPLv3)")
    assert is_copyleft("AGPL-3.0-only")
    assert not is_copyleft("LGPL-3.0-only")
    assert not is_copyleft("License :: OSI Approved :: GNU Lesser General Public License v3")
    assert not is_copyleft("MIT | Apache-2.0 | BSD-3-Clause")


def test_no_runtime_dependency_is_gpl() -> None:
    closure = runtime_closure()
    assert {"httpx", "sqlalchemy", "selectolax", "redis"} <= set(closure)
    assert "pytest" not in closure  # dev tools stay out
    assert "mypy" not in closure
    licenses = {name: license_of(dist) for name, dist in sorted(closure.items())}
    unknown = [name for name, text in licenses.items() if not text and name != PROJECT]
    assert unknown == [], f"no license metadata: {unknown}"
    copyleft = {name: text for name, text in licenses.items() if is_copyleft(text)}
    assert copyleft == {}, f"GPL/AGPL runtime dependencies: {copyleft}"
