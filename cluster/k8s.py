"""`janus submit k8s`: a KubeRay `RayJob` that brings up a Ray cluster (a CPU head and a GPU worker group),
runs the same `janus` command as its entrypoint with data and checkpoint volumes mounted, and shuts the
cluster down after the job. `--out FILE` writes the manifest; without it, `kubectl apply` submits it.

Manifests are checked against the RayJob CRD's OpenAPI schema (shipped in cluster/schemas/ from KubeRay),
including unknown fields, which an API server would drop silently."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from cluster.slurm import SubmitError

SCHEMA_DIR = Path(__file__).parent / "schemas"


@dataclass
class K8sJob:
    command: list[str]  # e.g. ["janus", "pretrain", "--config", "small", "run_dir=/checkpoints/run"]
    image: str = ""
    name: str = "janus"
    namespace: str = "default"
    workers: int = 1  # worker pods (nodes)
    gpus_per_worker: int = 1
    cpus_per_worker: int = 8
    memory_per_worker: str = "64Gi"
    head_cpus: int = 4
    head_memory: str = "16Gi"
    data_pvc: str = ""  # mounted at /data
    checkpoint_pvc: str = ""  # mounted at /checkpoints
    ray_version: str = "2.60.0"
    ttl_after_finished_s: int = 600
    backoff_limit: int = 3  # RayJob retries; each retry resumes the run from /checkpoints
    node_selector: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.image:
            raise SubmitError("--image is required: a container image with this project installed (see README)")
        if not IMAGE_REFERENCE.fullmatch(self.image):
            raise SubmitError(f"--image {self.image!r} is not an image reference: [REGISTRY[:PORT]/]NAME[:TAG][@sha256:"
                              f"DIGEST] in lower case, e.g. ghcr.io/acme/janus-seq:0.1")
        if self.workers < 1:
            raise SubmitError(f"--workers {self.workers}: a job needs at least 1 worker pod")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 1:
            raise SubmitError("--gpus-per-worker must be >= 0 and --cpus-per-worker >= 1")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", self.name):
            raise SubmitError(f"--name {self.name!r}: lower-case letters, digits and '-' (a DNS label)")
        if not self.command or Path(self.command[0]).name != "janus":
            raise SubmitError("give the janus command after `--`, e.g. `janus submit k8s --image IMG -- janus "
                              "pretrain --config small run_dir=/checkpoints/run`")


# the grammar of github.com/distribution/reference (a registry host, slash-separated lower-case path
# components, an optional tag and digest)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(rf"(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                             rf"(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?")


def _volumes(job: K8sJob) -> tuple[list, list]:
    volumes, mounts = [], []
    for name, claim, path in (("data", job.data_pvc, "/data"), ("checkpoints", job.checkpoint_pvc, "/checkpoints")):
        if claim:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
            mounts.append({"name": name, "mountPath": path})
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})  # NCCL and the loader need shared memory
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def render(job: K8sJob) -> dict:
    job.validate()
    volumes, mounts = _volumes(job)
    worker_resources = {"cpu": str(job.cpus_per_worker), "memory": job.memory_per_worker}
    if job.gpus_per_worker:
        worker_resources["nvidia.com/gpu"] = str(job.gpus_per_worker)
    head = {"name": "ray-head", "image": job.image, "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": str(job.head_cpus), "memory": job.head_memory},
                          "limits": {"cpu": str(job.head_cpus), "memory": job.head_memory}},
            "ports": [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"}],
            "volumeMounts": mounts}
    worker = {"name": "ray-worker", "image": job.image, "imagePullPolicy": "IfNotPresent",
              "resources": {"requests": dict(worker_resources), "limits": dict(worker_resources)},
              "volumeMounts": mounts}
    worker_pod = {"containers": [worker], "volumes": volumes}
    if job.node_selector:
        worker_pod["nodeSelector"] = dict(job.node_selector)
    if job.gpus_per_worker:
        worker_pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": {"app.kubernetes.io/name": "janus"}},
        "spec": {
            "entrypoint": shlex.join(job.command),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": job.ttl_after_finished_s,
            "backoffLimit": job.backoff_limit,
            "rayClusterSpec": {
                "rayVersion": job.ray_version,
                # the head schedules no training work: every torch rank lands on a GPU worker
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                                  "template": {"spec": {"containers": [head], "volumes": volumes}}},
                "workerGroupSpecs": [{
                    "groupName": "gpu-workers" if job.gpus_per_worker else "cpu-workers",
                    "replicas": job.workers, "minReplicas": job.workers, "maxReplicas": job.workers,
                    "rayStartParams": {},
                    "template": {"spec": worker_pod},
                }],
            },
        },
    }


@lru_cache(maxsize=1)
def rayjob_schema() -> dict:
    crd = yaml.safe_load((SCHEMA_DIR / "ray.io_rayjobs.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _unknown_fields(value, schema: dict, path: str) -> list[str]:
    """Fields the schema does not declare (kubectl --validate=strict would refuse them)."""
    out = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for k, v in value.items():
                    out += _unknown_fields(v, extra, f"{path}.{k}")
            return out
        for k, v in value.items():
            if k not in props:
                out.append(f"{path}.{k}")
            else:
                out += _unknown_fields(v, props[k], f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += _unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


def validate_manifest(manifest: dict) -> list[str]:
    """Problems found against the RayJob CRD schema: schema violations and undeclared fields."""
    import jsonschema

    schema = rayjob_schema()
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(manifest)]
    problems += [f"{p}: field not in the RayJob schema" for p in _unknown_fields(manifest, schema, "")]
    return problems


def to_yaml(manifest: dict) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


def submit(job: K8sJob, out: str | None = None) -> str:
    manifest = render(job)
    problems = validate_manifest(manifest)
    if problems:
        raise SubmitError(f"the rendered RayJob does not match the CRD schema: {problems[0]}")
    text = to_yaml(manifest)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        return f"wrote {out}: apply it with `kubectl apply -f {out}`"
    if shutil.which("kubectl") is None:
        raise SubmitError("kubectl not found: install it and configure a cluster, or write the manifest with --out")
    ctx = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True)
    if ctx.returncode != 0:
        raise SubmitError("kubectl has no cluster configured (kubectl config current-context failed): "
                          "set a context, or write the manifest with --out")
    done = subprocess.run(["kubectl", "apply", "-f", "-"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        raise SubmitError(f"kubectl apply failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()
