"""charts/helios-scaler: renders, lints, validates against Kubernetes, and configures the real server.

Rendered offline with helm-python-sdk (Helm's Go SDK, no helm binary, no cluster) for the chart's
defaults and every ``ci/*-values.yaml``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from helios_scaler.config import FIELDS, load_settings

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "helios-scaler"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
RELEASE = "helios-scaler"
NAMESPACE = "helios-system"
KUBE_VERSION = "1.30"

Manifests = dict[str, dict[str, Any]]


def _load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


#: (id, values): the chart's own defaults, then every ci/*-values.yaml.
VALUE_DICTS: list[tuple[str, dict[str, Any]]] = [("chart-defaults", {})] + [
    (path.name, _load_values(path)) for path in CI_VALUES
]
VALUE_SETS = [pytest.param(values, id=name) for name, values in VALUE_DICTS]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return loaded


def render(chart: helm.Chart, values: dict[str, Any], *, namespace: str = NAMESPACE) -> Manifests:
    """Rendered objects keyed by ``Kind`` (each kind appears at most once in this chart)."""
    manifests: Manifests = {}
    for template, text in chart.render(values, name=RELEASE, namespace=namespace).items():
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert doc["kind"] not in manifests, f"{template}: second {doc['kind']}"
            manifests[doc["kind"]] = doc
    return manifests


def container(manifests: Manifests) -> dict[str, Any]:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def config_file(manifests: Manifests) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(manifests["ConfigMap"]["data"]["config.yaml"])
    return loaded


def full_values() -> dict[str, Any]:
    return _load_values(CHART_DIR / "ci" / "full-values.yaml")


# --- lint and schemas --------------------------------------------------------------------------


def test_ci_values_exist() -> None:
    assert {"default-values.yaml", "full-values.yaml"} <= {path.name for path in CI_VALUES}


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == "0.1.0"
    assert meta["kubeVersion"]
    assert meta["home"] == "https://github.com/helios-scaler/helios-scaler"
    assert all("example" not in url for url in meta["sources"])


def test_values_schema_is_draft7(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("values", VALUE_SETS)
def test_values_match_schema(chart: helm.Chart, schema: dict[str, Any], values: dict[str, Any]) -> None:
    chart.validate_schema(values)
    jsonschema.Draft7Validator(schema).validate(chart.merge_values(values))


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": 1}, "replicas"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"config": {"grpc_port": 7000}}, "grpc_port"),
        ({"config": {"log_format": "xml"}}, "log_format"),
        ({"config": {"refresh_interval": "30 seconds"}}, "refresh_interval"),
        ({"prometheus": {"url": "prometheus:9090"}}, "url"),
        ({"service": {"grpcPort": 70000}}, "grpcPort"),
        ({"serviceMonitor": {"enabled": "yes"}}, "enabled"),
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, bad: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(bad)
    with pytest.raises(helm.HelmValuesError):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_config_schema_and_chart_cover_every_setting(chart: helm.Chart, schema: dict[str, Any]) -> None:
    """Each server setting is reachable exactly one way: `config.<key>` or derived by the chart.

    Fails when a new Settings field is added without exposing it in the chart.
    """
    in_config = set(schema["properties"]["config"]["properties"])
    assert in_config <= FIELDS.keys()
    derived: set[str] = set()
    for _, values in VALUE_DICTS:
        derived |= config_file(render(chart, values)).keys() - (chart.merge_values(values)["config"].keys())
    assert not in_config & derived
    assert in_config | derived == FIELDS.keys()


def test_values_yaml_config_only_has_settings(chart: helm.Chart) -> None:
    assert chart.values["config"].keys() <= FIELDS.keys()


# --- Kubernetes validity -----------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS)
def test_manifests_validate_against_kubernetes(chart: helm.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= manifests.keys()
    for kind, manifest in manifests.items():
        if kind == "ServiceMonitor":
            continue  # a CRD: kubernetes-validate ships no schema; its structure is asserted below
        # strict: unknown fields are errors (the API server would drop them silently).
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        assert manifest["metadata"]["namespace"] == NAMESPACE
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_kubernetes_validation_catches_errors() -> None:
    """Guards the guard: a strict-schema violation must raise."""
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}},
            KUBE_VERSION,
            strict=True,
        )


# --- image, ports, probes, security --------------------------------------------------------------


def test_image_tag_defaults_to_app_version(chart: helm.Chart) -> None:
    image = container(render(chart, {}))["image"]
    assert image == f"ghcr.io/helios-scaler/helios-scaler:{chart.metadata['appVersion']}"


def test_image_tag_and_digest_override(chart: helm.Chart) -> None:
    assert container(render(chart, {"image": {"tag": "1.2.3"}}))["image"].endswith(":1.2.3")
    digest = "sha256:" + "ab" * 32
    assert container(render(chart, {"image": {"tag": "1.2.3", "digest": digest}}))["image"] == (
        f"ghcr.io/helios-scaler/helios-scaler@{digest}"
    )


@pytest.mark.parametrize("values", VALUE_SETS)
def test_ports_are_named_and_match_the_config(chart: helm.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    settings = config_file(manifests)
    ports = {port["name"]: port for port in container(manifests)["ports"]}
    assert ports["grpc"]["containerPort"] == settings["grpc_port"] == 6000
    assert ports["http"]["containerPort"] == settings["http_port"] == 8080
    service = manifests["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    svc_ports = {port["name"]: port for port in service["ports"]}
    assert svc_ports["grpc"] == {
        "name": "grpc",
        "port": 6000,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert svc_ports["http"]["port"] == 8080
    assert svc_ports["http"]["targetPort"] == "http"


@pytest.mark.parametrize("values", VALUE_SETS)
def test_selectors_match_pod_labels(chart: helm.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    deployment = manifests["Deployment"]["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert manifests["Service"]["spec"]["selector"] == selector
    if "PodDisruptionBudget" in manifests:
        assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def test_default_probes_use_http_endpoints(chart: helm.Chart) -> None:
    main = container(render(chart, {}))
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_grpc_readiness_probe_replaces_http(chart: helm.Chart) -> None:
    probe = container(render(chart, full_values()))["readinessProbe"]
    assert probe["grpc"] == {"port": 6000, "service": ""}
    assert "httpGet" not in probe


def test_probe_with_two_handlers_fails_with_a_hint(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"readinessProbe\.httpGet=null"):
        chart.render({"readinessProbe": {"grpc": {"port": 6000}}}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_runs_as_non_root_with_a_read_only_root(chart: helm.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    ctx = container(manifests)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    # A read-only root still needs a writable /tmp.
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifests)["volumeMounts"]


def test_pod_uid_matches_the_image_user(chart: helm.Chart) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.MULTILINE)
    assert match, "the Dockerfile must switch to a numeric USER"
    pod = render(chart, {})["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(match.group(1))
    assert container(render(chart, {}))["securityContext"]["runAsUser"] == int(match.group(1))


def test_service_account_is_the_pods(chart: helm.Chart) -> None:
    manifests = render(chart, full_values())
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"] == "helios"
    without = render(chart, {"serviceAccount": {"create": False}})
    assert "ServiceAccount" not in without
    assert without["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_default_resources_request_and_limit(chart: helm.Chart) -> None:
    resources = container(render(chart, {}))["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_replica_count_is_one(chart: helm.Chart) -> None:
    assert render(chart, {})["Deployment"]["spec"]["replicas"] == 1


# --- the config file the server reads ----------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS)
def test_config_file_is_accepted_by_the_server(chart: helm.Chart, values: dict[str, Any], tmp_path: Path) -> None:
    manifests = render(chart, values)
    settings_yaml = manifests["ConfigMap"]["data"]["config.yaml"]
    assert config_file(manifests).keys() <= FIELDS.keys()
    path = tmp_path / "config.yaml"
    path.write_text(settings_yaml)
    settings = load_settings(path, env={})
    assert settings.grpc_port == 6000
    assert settings.http_port == 8080
    # The container reads exactly the file the ConfigMap provides.
    args = container(manifests)["args"]
    mount = next(m for m in container(manifests)["volumeMounts"] if m["name"] == "config")
    assert args == ["serve", "--config", f"{mount['mountPath']}/config.yaml"]


def test_full_values_config_reaches_settings(chart: helm.Chart, tmp_path: Path) -> None:
    values = full_values()
    path = tmp_path / "config.yaml"
    path.write_text(render(chart, values)["ConfigMap"]["data"]["config.yaml"])
    settings = load_settings(path, env={})
    assert settings.prometheus_url == values["prometheus"]["url"]
    assert settings.allowed_server_addresses == tuple(values["prometheus"]["allowedServerAddresses"])
    assert settings.log_level == "DEBUG"
    assert settings.training_workers == 2
    assert settings.max_series == 2000
    assert settings.refresh_interval.total_seconds() == 15


def test_no_prometheus_settings_by_default(chart: helm.Chart) -> None:
    settings = config_file(render(chart, {}))
    assert not {key for key in settings if key.startswith("prometheus_")}
    assert "allowed_server_addresses" not in settings


def _secret_at(manifests: Manifests, setting: str) -> tuple[str, str]:
    """(secretName, key) that kubelet puts where the config's ``setting`` points, or fail."""
    target = PurePosixPath(config_file(manifests)[setting])
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    mounts = [m for m in container(manifests)["volumeMounts"] if PurePosixPath(m["mountPath"]) == target.parent]
    assert len(mounts) == 1, f"no single volume mounted at {target.parent}"
    assert mounts[0].get("readOnly") is True
    assert "subPath" not in mounts[0], "subPath mounts never see rotated secrets"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    (item,) = [item for item in volume["secret"]["items"] if item["path"] == target.name]
    return volume["secret"]["secretName"], item["key"]


def test_full_values_wire_secrets_to_file_settings(chart: helm.Chart) -> None:
    values = full_values()
    manifests = render(chart, values)
    settings = config_file(manifests)
    auth, tls = values["prometheus"]["auth"], values["prometheus"]["tls"]
    token = auth["bearerTokenSecret"]
    assert _secret_at(manifests, "prometheus_bearer_token_file") == (token["name"], token["key"])
    ca = tls["caSecret"]
    assert _secret_at(manifests, "prometheus_ca_file") == (ca["name"], ca["key"])
    client = tls["clientCertSecret"]
    assert _secret_at(manifests, "prometheus_cert_file") == (client["name"], client["certKey"])
    assert _secret_at(manifests, "prometheus_key_file") == (client["name"], client["keyKey"])
    assert "prometheus_username" not in settings


def test_basic_auth_wires_username_and_password_file(chart: helm.Chart) -> None:
    values = _load_values(CHART_DIR / "ci" / "basic-auth-values.yaml")
    manifests = render(chart, values)
    settings = config_file(manifests)
    basic = values["prometheus"]["auth"]["basicAuth"]
    assert settings["prometheus_username"] == basic["username"]
    secret = basic["passwordSecret"]
    assert _secret_at(manifests, "prometheus_password_file") == (secret["name"], secret["key"])
    assert "prometheus_bearer_token_file" not in settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {
                "prometheus": {
                    "auth": {
                        "bearerTokenSecret": {"name": "t"},
                        "basicAuth": {"username": "u", "passwordSecret": {"name": "p"}},
                    }
                }
            },
            "either bearerTokenSecret or basicAuth",
        ),
        ({"prometheus": {"auth": {"basicAuth": {"username": "u"}}}}, "passwordSecret.name is empty"),
        ({"demo": {"enabled": True}, "prometheus": {"url": "http://p:9090"}}, "demo.enabled"),
    ],
)
def test_contradictory_values_fail_to_render(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_extra_env_is_appended(chart: helm.Chart) -> None:
    env = container(render(chart, full_values()))["env"]
    assert {"name": "HELIOS_LOG_LEVEL", "value": "DEBUG"} in env
    assert {e["name"] for e in env} >= {"MPLCONFIGDIR", "TZ"}


def test_demo_mode_runs_the_demo(chart: helm.Chart) -> None:
    args = container(render(chart, {"demo": {"enabled": True}}))["args"]
    assert args == ["demo", "--config", "/etc/helios-scaler/config.yaml"]


def test_config_checksum_rolls_the_pod_only_on_config_changes(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(chart, values)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({}) == base
    assert checksum({"podAnnotations": {"a": "b"}}) == base
    assert checksum({"config": {"log_level": "DEBUG"}}) != base
    assert checksum({"prometheus": {"url": "http://prometheus:9090"}}) != base


# --- optional objects --------------------------------------------------------------------------


def test_service_monitor_and_pdb_are_off_by_default(chart: helm.Chart) -> None:
    manifests = render(chart, {})
    assert "ServiceMonitor" not in manifests
    assert "PodDisruptionBudget" not in manifests
    assert "NetworkPolicy" not in manifests


def test_network_policy_admits_keda_on_grpc_and_monitoring_on_http(chart: helm.Chart) -> None:
    values = full_values()
    manifests = render(chart, values)
    policy = manifests["NetworkPolicy"]["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items()
        <= manifests["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    assert by_port["grpc"] == values["networkPolicy"]["grpcFrom"]
    assert by_port["http"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ports = {port["name"] for port in container(manifests)["ports"]}
    assert by_port.keys() <= ports


def test_service_monitor_with_full_values(chart: helm.Chart) -> None:
    values = full_values()
    manifests = render(chart, values)
    monitor = manifests["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == values["serviceMonitor"]["namespace"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["selector"]["matchLabels"].items() <= manifests["Service"]["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in manifests["Service"]["spec"]["ports"]}
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["scrapeTimeout"] == "5s"
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    assert set(spec) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}


def test_pdb_with_full_values(chart: helm.Chart) -> None:
    spec = render(chart, full_values())["PodDisruptionBudget"]["spec"]
    assert spec["minAvailable"] == 1
    assert "maxUnavailable" not in spec


# --- documentation -----------------------------------------------------------------------------


#: Values documented as one Kubernetes object rather than key by key.
OPAQUE_VALUES = {
    "strategy",
    "resources",
    "podSecurityContext",
    "securityContext",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
}


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OPAQUE_VALUES:
            yield from _leaf_keys(value, f"{path}.")
        else:
            yield path


def test_readme_documents_every_value(chart: helm.Chart) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    missing = [key for key in _leaf_keys(chart.values) if f"`{key}`" not in readme]
    assert not missing, f"chart README.md lacks rows for: {missing}"


def test_notes_point_at_the_grpc_service(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)["helios-scaler/templates/NOTES.txt"]
    assert f"scalerAddress: {RELEASE}.{NAMESPACE}.svc.cluster.local:6000" in notes
    assert "grpcurl -plaintext localhost:6000 grpc.health.v1.Health/Check" in notes


def test_render_does_not_mutate_values(chart: helm.Chart) -> None:
    values = full_values()
    before = copy.deepcopy(values)
    render(chart, values)
    assert values == before


def test_calendar_files_are_mounted_and_named_in_the_config(chart: helm.Chart) -> None:
    files = {"launches.csv": "start,end,name,kind\n2026-06-10T15:30:00Z,2026-06-10T17:15:00Z,opener,launch\n"}
    manifests = render(chart, {"calendars": {"files": files}})
    assert manifests["ConfigMap"]["data"]["launches.csv"] == files["launches.csv"]
    assert config_file(manifests)["calendar_dir"] == "/etc/helios-calendars"
    volumes = {volume["name"]: volume for volume in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["calendars"]["configMap"]["items"] == [{"key": "launches.csv", "path": "launches.csv"}]
    # The config volume carries only the config file, not the calendars.
    assert volumes["config"]["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]
    mounts = {mount["name"]: mount["mountPath"] for mount in container(manifests)["volumeMounts"]}
    assert mounts["calendars"] == "/etc/helios-calendars"
    existing = render(chart, {"calendars": {"existingConfigMap": "tournament-calendars"}})
    volumes = {volume["name"]: volume for volume in existing["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["calendars"]["configMap"] == {"name": "tournament-calendars"}
    assert "calendar_dir" not in config_file(render(chart, {}))


def test_a_calendar_file_name_the_server_would_refuse_is_refused_by_the_schema(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"calendars": {"files": {"World Cup.csv": "start,end,name\n"}}})


@pytest.mark.parametrize(("values", "volume"), [({}, "emptyDir"), (full_values(), "persistentVolumeClaim")])
def test_state_dir_is_on_the_state_volume(chart: helm.Chart, values: dict[str, Any], volume: str) -> None:
    """Warm restarts: state_dir points at the mounted state volume, an emptyDir unless a claim is named."""
    manifests = render(chart, values)
    state_dir = config_file(manifests)["state_dir"]
    (mount,) = [m for m in container(manifests)["volumeMounts"] if m["name"] == "state"]
    assert mount["mountPath"] == state_dir and not mount.get("readOnly", False)
    (state,) = [v for v in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "state"]
    assert volume in state
    if volume == "persistentVolumeClaim":
        assert state[volume]["claimName"] == values["state"]["existingClaim"]
    assert load_settings(env={"HELIOS_STATE_DIR": state_dir}).state_dir == Path(state_dir)


def test_no_state_volume_means_cold_starts(chart: helm.Chart) -> None:
    manifests = render(chart, {"state": {"enabled": False}})
    assert "state_dir" not in config_file(manifests)
    assert all(m["name"] != "state" for m in container(manifests)["volumeMounts"])
