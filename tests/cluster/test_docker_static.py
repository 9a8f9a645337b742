"""Static checks of docker/: no Docker engine or Kubernetes runs here, so the files are parsed.

Each test pins one property a broken edit would lose: the images' Ray equals the pinned Ray, the
Python tags agree, published ports are loopback-only, token auth is on everywhere with the token
never written into a file, GPU reservations exist, and what runs a study is the prunetune CLI.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")
RAY_SUPPORTED_PYTHONS = ("39", "310", "311", "312")  # tags Ray publishes (ray-project/ray CI)
TOKEN_LIKE = re.compile(r"\b[0-9a-f]{32,}\b", re.IGNORECASE)


def pinned_ray() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"ray\[[^\]]*\]==(\S+)", d))]
    assert len(pins) == 1, f"expected exactly one exact ray pin in pyproject.toml, got {deps}"
    return pins[0]


def base_image(dockerfile: str) -> tuple[str, str, str]:
    """(ray version, python tag, platform) of the FROM line, e.g. ('2.60.0', '311', 'gpu')."""
    froms = re.findall(r"^FROM\s+(\S+)", (DOCKER / dockerfile).read_text(), re.MULTILINE)
    assert len(froms) == 1, f"{dockerfile}: expected one FROM, got {froms}"
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d+)-(cpu|gpu|cu\d+)", froms[0])
    assert match, f"{dockerfile}: FROM {froms[0]} is not rayproject/ray:<ver>-py<XY>-<platform>"
    return match.group(1), match.group(2), match.group(3)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def k8s(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DOCKER / "k8s" / name).read_text()) if d]


def ray_services(doc: dict) -> dict[str, dict]:
    """The compose services that run a Ray node (their command is `ray start ...`)."""
    return {
        n: s for n, s in doc["services"].items() if s.get("command", [None])[:2] == ["ray", "start"]
    }


def pod_containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_image_is_the_pinned_ray(dockerfile: str) -> None:
    version, _, _ = base_image(dockerfile)
    assert version == pinned_ray()


def test_python_tags_agree_and_are_supported() -> None:
    tags = {base_image(f)[1] for f in DOCKERFILES}
    assert len(tags) == 1, f"the Dockerfiles use different Pythons: {tags}"
    (tag,) = tags
    assert tag in RAY_SUPPORTED_PYTHONS
    minimum = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(int(p) for p in re.fullmatch(r">=(\d+)\.(\d+)", minimum).groups())
    assert (int(tag[0]), int(tag[1:])) >= low
    # The install step double-checks the interpreter it got (fails the build otherwise).
    for f in DOCKERFILES:
        assert f"sys.version_info[:2] == ({tag[0]}, {tag[1:]})" in (DOCKER / f).read_text()


def test_gpu_and_cpu_variants() -> None:
    gpu_platform = base_image("Dockerfile")[2]
    assert gpu_platform == "gpu" or gpu_platform.startswith("cu")
    assert base_image("Dockerfile.cpu")[2] == "cpu"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_prunetune_with_auth_on_and_no_token(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    assert re.search(r"^RUN pip install [^\n]*\s\.\s", text, re.MULTILINE), (
        "prunetune pip-installed"
    )
    assert re.search(r"^ENV RAY_AUTH_MODE=token\b", text, re.MULTILINE)
    assert "RAY_AUTH_TOKEN=" not in text and not TOKEN_LIKE.search(text)
    assert re.search(r'^CMD \["prunetune"', text, re.MULTILINE)


# --- docker compose ------------------------------------------------------------------------------


def test_compose_has_a_head_and_gpu_workers() -> None:
    services = ray_services(compose())
    heads = [n for n, s in services.items() if "--head" in s["command"]]
    workers = [n for n, s in services.items() if "--head" not in s["command"]]
    assert len(heads) == 1 and len(workers) >= 2
    device_ids = []
    for name in workers:
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        device_ids += device["device_ids"]
    assert len(device_ids) == len(set(device_ids)), "two workers reserve the same GPU"


def test_compose_publishes_only_on_loopback() -> None:
    published = []
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published.append(int(port.split(":")[2]))
    assert sorted(published) == [8265, 9000, 10001]


def test_compose_token_auth_everywhere_from_a_secret() -> None:
    doc = compose()
    users = {n: s for n, s in doc["services"].items() if n in ray_services(doc) or n == "submit"}
    for name, service in users.items():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert "RAY_AUTH_TOKEN" not in env, f"{name}: the token must not be written in the file"
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token", name
        assert "ray_auth_token" in service["secrets"], name
    assert doc["secrets"]["ray_auth_token"] == {"file": "./ray_auth_token"}
    assert "ray_auth_token" in (DOCKER / ".gitignore").read_text().split()
    assert not TOKEN_LIKE.search((DOCKER / "docker-compose.yml").read_text())


def test_compose_storage_is_the_minio_bucket_with_keys_from_a_secret() -> None:
    doc = compose()
    minio = doc["services"]["minio"]
    assert minio["image"].startswith("quay.io/minio/minio:RELEASE.")  # pinned, never :latest
    assert minio["environment"] == {
        "MINIO_ROOT_USER_FILE": "/run/secrets/minio_root_user",
        "MINIO_ROOT_PASSWORD_FILE": "/run/secrets/minio_root_password",
    }
    assert "minio-data:/data" in minio["volumes"] and "minio-data" in doc["volumes"]
    bucket = doc["services"]["minio-bucket"]
    assert "mc mb --ignore-existing store/prunetune" in bucket["entrypoint"][-1]
    head = next(s for s in ray_services(doc).values() if "--head" in s["command"])
    assert head["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    clients = {n: s for n, s in doc["services"].items() if n in ray_services(doc) or n == "submit"}
    for name, service in clients.items():
        env = service["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/s3_credentials", name
        assert "s3_credentials" in service["secrets"], name
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), name
        assert not service.get("volumes"), f"{name}: no node shares a disk; the bucket is shared"
    ignored = (DOCKER / ".gitignore").read_text().split()
    for secret in ("minio_root_user", "minio_root_password", "s3_credentials"):
        assert doc["secrets"][secret] == {"file": f"./{secret}"}
        assert secret in ignored
    assert (DOCKER / "make_s3_credentials.sh").exists()


def test_compose_entrypoints() -> None:
    doc = compose()
    head = next(s for s in ray_services(doc).values() if "--head" in s["command"])
    assert "--dashboard-port=8265" in head["command"] and "--block" in head["command"]
    submit = doc["services"]["submit"]
    assert submit["entrypoint"][:2] == ["prunetune", "submit"]
    assert "--storage=s3://prunetune/studies" in submit["entrypoint"]


# --- KubeRay -------------------------------------------------------------------------------------


def test_raycluster_auth_gpu_storage_and_service() -> None:
    docs = {d["kind"]: d for d in k8s("raycluster.yaml")}
    spec = docs["RayCluster"]["spec"]
    assert spec["rayVersion"] == pinned_ray()
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    claim = docs["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for container in pod_containers(spec):
        env = env_of(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "prunetune-ray-auth", "key": "auth_token"}
        assert "value" not in env["RAY_AUTH_TOKEN"]
        assert {"name": "studies", "mountPath": "/mnt/studies"} in container["volumeMounts"]
    for group in spec["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert volumes["studies"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_rayjob_runs_the_cli_with_auth() -> None:
    (job,) = k8s("rayjob.yaml")
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["prunetune", "run"]
    assert words[words.index("--address") + 1] == "auto"
    assert words[words.index("--storage") + 1] == "/mnt/studies"
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == pinned_ray()
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    for container in pod_containers(cluster):
        assert env_of(container)["RAY_AUTH_MODE"]["value"] == "token"
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_manifests_take_s3_keys_from_a_secret(name: str) -> None:
    for doc in k8s(name):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        for container in pod_containers(spec):
            env = env_of(container)
            for var, key in (
                ("AWS_ENDPOINT_URL", "endpoint_url"),
                ("AWS_ACCESS_KEY_ID", "access_key_id"),
                ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
            ):
                assert "value" not in env[var], f"{container['name']}: {var} written in the file"
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "prunetune-s3", "key": key, "optional": True}


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_manifests_hold_no_token(name: str) -> None:
    assert not TOKEN_LIKE.search((DOCKER / "k8s" / name).read_text())
