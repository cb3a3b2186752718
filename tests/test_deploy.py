"""Deployment files: the container image definition passes hadolint, every Kubernetes manifest
(the generated ConfigMaps included) validates against a current Kubernetes, and the image, the
Deployment, compose and the README's CLI all say the same thing.

No container engine is needed: the image is checked as a definition, the manifests as data.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.keeper import STOP_DEADLINE
from gateway.loader import load_config
from gateway.serve import SHUTDOWN_GRACE
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAY = KUBERNETES / "overlays" / "example"
KUBERNETES_VERSION = "1.37.0"
IMAGE_PORT = 8080


def _tool(name: str) -> str:
    """A tool the test extras install next to the interpreter (or on PATH)."""
    found = shutil.which(
        name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
        pytest.skip(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _dockerfile() -> dict[str, list[str]]:
    """Dockerfile instructions by keyword (continuation lines joined), in order."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.setdefault(keyword.upper(), []).append(rest.strip())
    return instructions


def _exec_form(value: str) -> list[str]:
    parsed = yaml.safe_load(value)
    assert isinstance(parsed, list), f"{value} is not in exec form"
    return [str(part) for part in parsed]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization(directory: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return document


def _resources(directory: Path) -> list[dict[str, Any]]:
    """Every resource a kustomization names, recursively, plus its generated ConfigMaps."""
    found: list[dict[str, Any]] = []
    kustomization = _kustomization(directory)
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml: {entry} does not exist"
        found.extend(_resources(target) if target.is_dir() else _documents(target))
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for file in generator["files"]:
            path = directory / file
            assert path.is_file(), f"{directory}/kustomization.yaml: {file} does not exist"
            data[path.name] = path.read_text(encoding="utf-8")
        found.append(
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": generator["name"]}, "data": data}
        )  # fmt: skip
    for patch in kustomization.get("patches", []):
        found.extend(_documents(directory / patch["path"]))
    return found


def _one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [r for r in resources if r["kind"] == kind]
    assert matching, f"no {kind}"
    return matching[0]


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_slim_non_root_and_runs_the_readme_cli() -> None:
    instructions = _dockerfile()
    stages = instructions["FROM"]
    assert len(stages) >= 2, "multi-stage: build, then a runtime stage without build tools"
    assert all("slim" in stage or stage.startswith("${") for stage in stages)
    assert instructions["ARG"][0].startswith("PYTHON_IMAGE=python:3.11-slim")
    user = instructions["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "runs as a non-root user"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert _exec_form(instructions["ENTRYPOINT"][-1]) == list(scripts)  # mcp-discovery-gateway
    command = _exec_form(instructions["CMD"][-1])
    assert command[0] == "serve"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {
        "--config": "/etc/mcp-gateway",
        "--listen": f"0.0.0.0:{IMAGE_PORT}",
        "--state-dir": "/var/lib/mcp-gateway",
    }
    assert instructions["VOLUME"] == ['["/var/lib/mcp-gateway"]']  # state on a volume
    assert instructions["EXPOSE"] == [str(IMAGE_PORT)]
    healthcheck = instructions["HEALTHCHECK"][0]
    assert f"http://127.0.0.1:{IMAGE_PORT}/healthz" in healthcheck
    # The CLI in the image accepts exactly these arguments (what the README documents).
    help_text = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"], capture_output=True, text=True
    ).stdout
    for option in options:
        assert option in help_text


def test_the_image_needs_nothing_written_outside_its_volume() -> None:
    """Read-only root filesystem: no bytecode written at run time, caches under the volume."""
    env = dict(part.split("=", 1) for part in shlex.split(" ".join(_dockerfile()["ENV"])))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["XDG_CACHE_HOME"].startswith("/var/lib/mcp-gateway/")


def test_every_kubernetes_manifest_validates() -> None:
    resources = _resources(OVERLAY)
    kinds = {resource["kind"] for resource in resources}
    assert kinds >= {
        "Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "NetworkPolicy", "Namespace",
    }  # fmt: skip
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{resource['kind']}/{resource['metadata']['name']}"
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")


def test_the_deployment_matches_the_image_and_the_gateway() -> None:
    resources = _resources(OVERLAY)
    deployment = _one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == _exec_form(_dockerfile()["CMD"][-1])
    assert container["ports"][0]["containerPort"] == IMAGE_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == _dockerfile()["USER"][-1].split(":")[0]
    assert "memory" in container["resources"]["limits"]
    # Termination: the Service forgets the pod (preStop), then the gateway drains, then it
    # keeps its catalog for the restart (a container restart keeps the emptyDir).
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + SHUTDOWN_GRACE + STOP_DEADLINE
    # The config mounts are the ConfigMaps the overlay generates from federation_config/.
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    generated = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    assert mounts["config"] == "/etc/mcp-gateway"
    assert mounts["views"] == "/etc/mcp-gateway/views"
    assert mounts["state"] == "/var/lib/mcp-gateway"
    for volume in ("config", "views"):
        assert volumes[volume]["configMap"]["name"] in generated
    # The HPA, PDB and Service select this Deployment.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        _one(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        selector = (
            _one(resources, kind)["spec"].get("selector")
            or _one(resources, kind)["spec"]["podSelector"]
        )
        assert selector["matchLabels"].items() <= labels.items(), kind
    assert _one(resources, "Service")["spec"]["selector"].items() <= labels.items()


def test_the_overlay_config_is_every_file_of_its_federation_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generators list every file (a view left out would silently vanish), the config
    loads, and every secret it references comes from the Secret the Deployment names."""
    directory = OVERLAY / "federation_config"
    listed = {
        file
        for generator in _kustomization(OVERLAY)["configMapGenerator"]
        for file in generator["files"]
    }
    on_disk = {
        str(path.relative_to(OVERLAY)) for path in directory.rglob("*.yaml") if path.is_file()
    }
    assert listed == on_disk
    referenced = set(
        re.findall(r"\$\{([A-Z_]+)\}", "".join(p.read_text() for p in directory.rglob("*.yaml")))
    )
    deployment = _one(_resources(OVERLAY), "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    from_secret = {item["name"] for item in env if "secretKeyRef" in item.get("valueFrom", {})}
    assert referenced <= from_secret, referenced - from_secret
    for name in referenced:
        monkeypatch.setenv(name, "a-token")
    config = load_config(directory)
    assert [u.name for u in config.gateway.upstreams] == ["internal", "official"]
    assert set(config.views) == {"payments"}


def test_compose_runs_the_image_as_the_deployment_does() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["gateway"]
    assert (REPO / service["build"]["dockerfile"]).is_file()
    assert service["command"] == _exec_form(_dockerfile()["CMD"][-1])
    assert service["read_only"] is True
    assert service["ports"] == [f"127.0.0.1:{IMAGE_PORT}:{IMAGE_PORT}"]
    config_mount = service["volumes"][0]
    default = re.fullmatch(r"\$\{GATEWAY_CONFIG:-(.+)\}", config_mount["source"])
    assert default is not None
    assert (DEPLOY / default.group(1) / "gateway.yaml").is_file()  # the offline demo
    assert config_mount["target"] == "/etc/mcp-gateway"
    assert config_mount["read_only"] is True


async def test_every_metric_the_operations_guide_alerts_on_exists(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """An alert on a metric that does not exist never fires: the guide names only real ones."""
    from tests.conftest import file_upstream
    from tests.fakes import server_entry

    upstream = file_upstream(tmp_path, "one", [server_entry("io.github.a/b", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream], access_log=False))
    await client.get("/v0.1/servers")
    text = (await (await client.get("/metrics")).read()).decode()
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    families = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))  # series with no samples yet
    exported = samples | families
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\bmcp_gateway_[a-z_]+", guide))
    assert len(named) >= 10
    assert named <= exported, named - exported
