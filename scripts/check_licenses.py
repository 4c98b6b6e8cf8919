#!/usr/bin/env python3
"""License allow-list check over the installed environment (the free replacement for FOSSA).

Reads each installed distribution's license metadata (License-Expression, License, classifiers)
and fails when a distribution carries no allowed license. Run it in an environment that holds only
the runtime dependencies, not the CI tools.

    python scripts/check_licenses.py --allow-file .github/license-allowlist.txt [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

IGNORED = {"pip", "setuptools", "wheel", "pip-licenses", "privacy-finetuner"}


def read_allowlist(path: Path) -> list[str]:
    """Allowed license names, lower-cased, comments and blanks dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line.lower() for line in lines if line]


def licenses_of(dist: metadata.Distribution) -> list[str]:
    """Every license statement a distribution makes about itself."""
    meta = dist.metadata
    found = [*(meta.get_all("License-Expression") or []), *(meta.get_all("License") or [])]
    found += [
        c.split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    found = [f.strip() for f in found if f and f.strip() and len(f) < 200]
    return found or ["UNKNOWN"]


def is_allowed(licenses: list[str], allowed: list[str]) -> bool:
    """True if any stated license starts with an allowed name (or an SPDX OR-choice does)."""
    for lic in licenses:
        for choice in lic.replace("(", " ").replace(")", " ").split(" OR "):
            if any(choice.strip().lower().startswith(a) for a in allowed):
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--allow-file", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    allowed = read_allowlist(args.allow_file)
    rejected: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get_all("Name") or [""])[0].lower()
        if not name or name in IGNORED:
            continue
        lic = licenses_of(dist)
        if not is_allowed(lic, allowed):
            rejected[name] = lic
    if args.json:
        print(json.dumps({"rejected": rejected}, sort_keys=True))
    for name, lic in sorted(rejected.items()):
        print(f"not allowed: {name}: {'; '.join(lic)}", file=sys.stderr)
    print(f"license check: {len(rejected)} distribution(s) outside the allow-list")
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
