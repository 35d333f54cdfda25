"""Shared fixtures of the chart tests: the chart loaded with the Helm v4 engine and rendering.

The tests run with the repository's virtualenv (`charts/tests/run`, or
`.venv/bin/python -m pytest -q charts/tests`), which scripts/install-test-deps fills from
tests/requirements.txt.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tandem"
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "observability"))

RELEASE = "tandem"
NAMESPACE = "tandem-system"

# Every switch on, so every template renders.
ALL_ON: dict[str, Any] = {
    "operator": {"replicas": 2},
    "networkPolicy": {"enabled": True, "apiServerCidrs": ["10.96.0.1/32"]},
    "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317",
                "resourceAttributes": "deployment.environment=test"},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "scrapeTimeout": "10s", "labels": {"release": "prom"}},
        "podMonitors": {"enabled": True, "scrapeTimeout": "10s", "labels": {"release": "prom"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"},
                           "additionalAlertLabels": {"team": "voice"}},
        "dashboards": {"namespace": "monitoring", "annotations": {"grafana_folder": "Voice"}},
    },
}


def sriov_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values-sriov.yaml").read_text())


@dataclass(frozen=True)
class Rendered:
    """The objects one render produced, with the template each came from."""

    objects: list[tuple[str, dict[str, Any]]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for _, obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]


@pytest.fixture(scope="session")
def helm():
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm_python is missing: run `make deps` (scripts/install-test-deps) to fill .venv")
    return helm_python


@pytest.fixture(scope="session")
def chart(helm):
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def render(chart):
    """Renders the chart with the given values as `helm template` would."""
    cache: dict[str, Rendered] = {}

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
            objects = []
            notes = ""
            for template, text in sorted(manifests.items()):
                if template.endswith("NOTES.txt"):
                    notes = text
                    continue
                for doc in yaml.safe_load_all(text):
                    if doc:
                        objects.append((template, doc))
            cache[key] = Rendered(objects, notes)
        return cache[key]

    return _render


# The value sets every render test runs with.
VALUE_SETS = ("default", "sriov", "all-on")


def values_for(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    if name == "sriov":
        return sriov_values()
    return ALL_ON
