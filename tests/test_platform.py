"""The cluster files in platform/: KubeRay manifests, the cluster-launcher config and the
container image agree with each other and with the code they run."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

import tacfn
from tacfn.cli import build_parser
from tacfn.search._space import SEARCH_SPACES_DIR, find_space, load_space

REPO = Path(__file__).resolve().parents[1]
PLATFORM = REPO / "platform"
RAYCLUSTER = PLATFORM / "kuberay" / "raycluster.yaml"
RAYJOB = PLATFORM / "kuberay" / "rayjob.yaml"
LAUNCHER = PLATFORM / "cluster.yaml"
DOCKERFILE = PLATFORM / "Dockerfile"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path, kind: str) -> dict[str, Any]:
    [doc] = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _cluster_specs() -> dict[str, dict[str, Any]]:
    """The RayCluster spec of each manifest: the long-lived cluster and the RayJob's own."""
    return {"raycluster": _one(RAYCLUSTER, "RayCluster")["spec"], "rayjob": _one(RAYJOB, "RayJob")["spec"]["rayClusterSpec"]}


def _pods(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod specs by group: ``head`` and each worker group's name."""
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _instruction(name: str) -> list[str]:
    return [args for instr, args in _dockerfile() if instr == name]


def _entrypoint() -> list[str]:
    return shlex.split(_one(RAYJOB, "RayJob")["spec"]["entrypoint"])


def _job_space():
    args = build_parser().parse_args(_entrypoint()[1:])
    return load_space(find_space(args.space))


# --- the manifests ------------------------------------------------------------------------------


def test_the_files_parse_and_have_the_right_kinds() -> None:
    assert [(d["apiVersion"], d["kind"]) for d in _docs(RAYCLUSTER)] == [
        ("ray.io/v1", "RayCluster"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "PersistentVolumeClaim"),
    ]
    assert [(d["apiVersion"], d["kind"]) for d in _docs(RAYJOB)] == [("ray.io/v1", "RayJob")]
    job = _one(RAYJOB, "RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    assert not (PLATFORM / "__init__.py").exists() and not list(PLATFORM.rglob("*.py")), "platform/ is not a package"


def test_the_job_entrypoint_is_a_real_search_command() -> None:
    argv = _entrypoint()
    [script] = metadata.entry_points(group="console_scripts", name=argv[0])
    assert script.value == "tacfn.cli:main" and script.dist.name == "tacfn", "the console script pip installs"
    args = build_parser().parse_args(argv[1:])  # exits (a SystemExit) on an unknown option
    assert args.command == "search" and not args.resume
    path = find_space(args.space)
    assert path.parent == SEARCH_SPACES_DIR, "a space the image ships, found by name"
    spec = load_space(path)  # validated as `tacfn search` validates it
    assert spec.name == args.space
    pods = _pods(_cluster_specs()["rayjob"]).values()
    results = {m["mountPath"] for pod in pods for m in pod["containers"][0]["volumeMounts"] if m["name"] == "results"}
    assert len(results) == 1 and args.out.startswith(results.pop() + "/"), "the results land on the shared volume"


@pytest.mark.parametrize("manifest", ["raycluster", "rayjob"])
def test_gpu_workers_request_gpus_that_the_trials_fit(manifest: str) -> None:
    spec = _cluster_specs()[manifest]
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0", "trials run on the GPU workers"
    trial = _job_space().search.resources
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = int(group["rayStartParams"]["num-gpus"])
        assert gpus >= 1 and int(limits["nvidia.com/gpu"]) == int(requests["nvidia.com/gpu"]) == gpus
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert 0 < trial.gpu <= gpus
        per_node = round(gpus / trial.gpu)  # trials that share the node's GPUs
        assert per_node * trial.cpu <= int(limits["cpu"]), f"{per_node} trials of {trial.cpu} CPUs must fit"


@pytest.mark.parametrize("manifest", ["raycluster", "rayjob"])
def test_every_node_shares_the_results_volume_and_the_s3_settings(manifest: str) -> None:
    claims = {d["metadata"]["name"]: d["spec"] for d in _docs(RAYCLUSTER) if d["kind"] == "PersistentVolumeClaim"}
    pods = _pods(_cluster_specs()[manifest])
    assert len(pods) >= 2
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        [container] = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claim = volumes["results"]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in claims[claim]["accessModes"], f"{name}: results on a volume every node writes"
        assert mounts["results"] == "/mnt/results", name
        env = {e["name"] for e in container["env"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3"} <= env, name
        assert mounts["data"] == f"{_workdir()}/data", f"{name}: the data where relative data paths resolve"
    assert _job_space().base["data"]["path"].startswith("data/")


# --- the cluster launcher ----------------------------------------------------------------------


def test_the_launcher_config_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(LAUNCHER.read_text())
    validate_config(prepare_config(config))  # Ray's schema and its node-type rules
    assert config["provider"]["type"] == "aws"
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    trial = _job_space().search.resources
    assert workers
    for name, node in workers.items():
        assert node["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4d.", "p5.")), name
        gpus = node["resources"]["GPU"]
        assert gpus >= 1 and 0 <= node["min_workers"] <= node["max_workers"] <= config["max_workers"]
        assert round(gpus / trial.gpu) * trial.cpu <= node["resources"]["CPU"]
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert all(dst.startswith(f"{_workdir()}/data/") for dst in config["file_mounts"])


# --- the image ------------------------------------------------------------------------------------


def _workdir() -> str:
    [workdir] = _instruction("WORKDIR")
    return workdir


def _image_tag() -> str:
    """The tag the Dockerfile's header builds."""
    [tag] = re.findall(r"docker build -f platform/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    return tag


def test_every_file_runs_the_image_the_dockerfile_builds() -> None:
    tag = _image_tag()
    images = {c["image"] for spec in _cluster_specs().values() for pod in _pods(spec).values() for c in pod["containers"]}
    images.add(yaml.safe_load(LAUNCHER.read_text())["docker"]["image"])
    assert images == {tag}
    assert f":{tacfn.__version__}-" in tag, "the image is tagged with the package version"
    assert f"-t {tag} ." in (REPO / "README.md").read_text()


def test_the_image_is_rays_gpu_image_at_the_manifests_ray_version() -> None:
    [base] = _instruction("FROM")
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-gpu", base)
    assert match, base
    ray_version = match.group(1)
    assert {spec["rayVersion"] for spec in _cluster_specs().values()} == {ray_version}
    [ray] = [r for r in map(Requirement, metadata.requires("tacfn") or []) if r.name == "ray"]
    assert ray.specifier.contains(ray_version), "pip keeps the image's Ray"


def test_the_dockerfile_installs_the_project() -> None:
    [copy] = _instruction("COPY")
    *options, source, destination = copy.split()
    assert source == "." and destination == _workdir(), "the whole checkout, installed where Ray nodes start"
    [run] = _instruction("RUN")
    install = run.split("&&")[0].split()
    assert install[:2] == ["pip", "install"] and install[-1] == "." and "-e" not in install
    assert "import ray, torch, tacfn" in run, "the build fails if the project does not import"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)
    needed = {"pyproject.toml", "README.md", "tacfn", "dashboards", "search_spaces"}  # README: the package's readme
    assert not needed & set(ignored)


def test_the_wheel_ships_the_search_spaces(tmp_path: Path) -> None:
    """`tacfn search quickstart` must work from a plain install, as in the image."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = tmp_path.glob("tacfn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"search_spaces/{p.name}" for p in (REPO / "search_spaces").glob("*.yaml")}
    assert shipped and shipped <= names
    assert "tacfn/cli.py" in names and "dashboards/__init__.py" in names
