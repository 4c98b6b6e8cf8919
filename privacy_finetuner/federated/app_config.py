"""The Flower app directory for a real deployment: ``pyproject.toml`` with the job inside.

``flwr run`` packs this directory into a FAB and sends it to the SuperLink, which hands its
``[tool.flwr.app.config]`` to the ServerApp and to every ClientApp. Putting the whole job there
(``job``, YAML text) means the server and all clients parse the same configuration; nothing but
node-local settings (``data-path``) comes from the SuperNodes. The code itself is not in the FAB:
every node has ``privacy-finetuner[train,guard,federated]`` installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privacy_finetuner._version import __version__
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.federated.inputs import JOB_KEY, job_to_text

__all__ = ["flower_app_config", "write_flower_app"]


def flower_app_config(job: JobConfig, *, validation_path: str = "") -> dict[str, Any]:
    """The app's ``pyproject.toml`` as a dict."""
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "privacy-finetuner-federated",
            "version": __version__,
            "description": "Federated DP fine-tuning of an agent (privacy-finetuner on Flower)",
            "license": "Apache-2.0",
            "dependencies": [f"privacy-finetuner[train,guard,federated]=={__version__}"],
        },
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "flwr": {
                "app": {
                    "publisher": "privacy-finetuner",
                    "components": {
                        "serverapp": "privacy_finetuner.federated.server_app:app",
                        "clientapp": "privacy_finetuner.federated.client_app:app",
                    },
                    "config": {JOB_KEY: job_to_text(job), "validation-path": validation_path},
                }
            },
        },
    }


def write_flower_app(out: Path, job: JobConfig, *, validation_path: str = "") -> Path:
    """Write ``out/pyproject.toml``; returns its path."""
    import tomli_w

    out.mkdir(parents=True, exist_ok=True)
    path = out / "pyproject.toml"
    text = tomli_w.dumps(
        flower_app_config(job, validation_path=validation_path), multiline_strings=True
    )
    header = (
        "# Written by `privacy-finetuner federated app`; edit the job YAML and regenerate.\n"
        "# Deploy: see docs/federated.md (SuperLink + SuperNodes with TLS, then `flwr run`).\n"
    )
    path.write_text(header + text, encoding="utf-8")
    return path
