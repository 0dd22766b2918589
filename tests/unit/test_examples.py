"""examples/scaledobjects/*.yaml: valid ScaledObjects for KEDA, valid trigger metadata for helios-scaler.

The KEDA CRD comes from ``shared/keda`` beside the repository (CI checks ``shared/`` out next to
the clone); without it these tests fail instead of silently skipping.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from traces import SHARED

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "scaledobjects"
KEDA_CRD = SHARED / "keda" / "keda.sh_scaledobjects.yaml"
HELIOS_TRIGGER_TYPES = ("external", "external-push")

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _scaled_objects() -> list[Any]:
    return list(_iter_scaled_objects())


def _iter_scaled_objects() -> Iterator[Any]:
    for path in EXAMPLE_FILES:
        for doc in _documents(path):
            if doc.get("kind") == "ScaledObject":
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


def _helios_triggers() -> list[Any]:
    return list(_iter_helios_triggers())


def _iter_helios_triggers() -> Iterator[Any]:
    for path in EXAMPLE_FILES:
        for doc in _documents(path):
            if doc.get("kind") != "ScaledObject":
                continue
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] in HELIOS_TRIGGER_TYPES:
                    name = trigger.get("name", trigger["type"])
                    yield pytest.param(trigger, id=f"{path.name}:{doc['metadata']['name']}:{name}")


def _no_pruning(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema, with unknown fields made errors.

    The API server silently prunes fields a structural schema does not declare, so a typo such as
    ``fallback.replica`` would apply cleanly and do nothing. Here every object that lists its
    ``properties`` (and does not preserve unknown fields) gets ``additionalProperties: false``.
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for key, value in node.items():
                # "properties" maps field names to schemas: a field may itself be named like a keyword.
                if key == "properties":
                    for sub in value.values():
                        walk(sub)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.protocols.Validator:
    if not KEDA_CRD.is_file():
        pytest.fail(
            f"KEDA's ScaledObject CRD not found at {KEDA_CRD}: check out shared/ beside the repository",
            pytrace=False,
        )
    crd = yaml.safe_load(KEDA_CRD.read_text())
    schema = _no_pruning(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # OpenAPI v3 schemas are close enough to draft 7; x-kubernetes-* keywords are ignored.
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLE_FILES}
    assert {"worldcup-demo.yaml", "http-requests.yaml", "external-push.yaml", "shadow-mode.yaml"} <= names
    assert len(list(_scaled_objects())) >= 4


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_every_document_is_a_kubernetes_object(path: Path) -> None:
    for doc in _documents(path):
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"].get("name"), doc


@pytest.mark.parametrize("scaled_object", _scaled_objects())
def test_scaled_object_matches_keda_crd(
    scaled_object: dict[str, Any], crd_validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(crd_validator.iter_errors(scaled_object), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled_object["spec"]
    # The CRD's CEL rule (x-kubernetes-validations), which jsonschema does not evaluate.
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)


@pytest.mark.parametrize("scaled_object", [p for p in _scaled_objects() if "fallback" in p.values[0]["spec"]])
def test_fallback_only_with_average_value(scaled_object: dict[str, Any]) -> None:
    """KEDA rejects `fallback` unless every trigger uses metricType AverageValue (the default)."""
    for trigger in scaled_object["spec"]["triggers"]:
        assert trigger.get("metricType", "AverageValue") == "AverageValue", trigger


def test_the_crd_check_catches_a_typo(crd_validator: jsonschema.protocols.Validator) -> None:
    """Guards the guard: a misspelt field and a wrongly typed value must both fail."""
    (good,) = (p.values[0] for p in _scaled_objects() if "http-requests" in str(p.id))
    typo = copy.deepcopy(good)
    typo["spec"]["fallback"]["replica"] = typo["spec"]["fallback"].pop("replicas")
    assert not crd_validator.is_valid(typo)
    unquoted = copy.deepcopy(good)
    unquoted["spec"]["triggers"][0]["metadata"]["threshold"] = 50
    assert not crd_validator.is_valid(unquoted)


@pytest.mark.parametrize("trigger", _helios_triggers())
def test_helios_trigger_metadata_parses(trigger: dict[str, Any]) -> None:
    from helios_scaler.trigger import ScalerMetadata

    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    assert metadata["scalerAddress"].endswith(".svc.cluster.local:6000")
    meta = ScalerMetadata.parse(metadata)
    assert meta.query == metadata["query"].strip()
    assert meta.threshold == float(metadata["threshold"])


def test_bad_metadata_is_rejected() -> None:
    """The parser the examples are checked with does reject what KEDA would forward as-is."""
    from helios_scaler.errors import InvalidMetadata
    from helios_scaler.trigger import ScalerMetadata

    with pytest.raises(InvalidMetadata, match="quantile"):
        ScalerMetadata.parse({"query": "up", "threshold": "10", "quantile": "90"})
