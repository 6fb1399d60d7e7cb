"""`janus submit k8s` renders a KubeRay RayJob that validates against the RayJob CRD schema shipped by
KubeRay (no API server runs here); mistakes in a manifest are caught by the same check."""

import copy
import subprocess
import sys

import pytest
import yaml

from cluster.k8s import K8sJob, render, validate_manifest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cluster.cli", "submit", "k8s", *args], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})


def test_rendered_rayjob_is_valid_against_the_crd(tmp_path):
    out = tmp_path / "job.yaml"
    done = _cli("--image", "ghcr.io/acme/janus:0.1", "--workers", "4", "--gpus-per-worker", "8", "--data-pvc",
                "corpora", "--checkpoint-pvc", "runs", "--out", str(out), "--", "janus", "pretrain", "--config",
                "small", "run_dir=/checkpoints/pretrain", "shards=/data/shards")
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(out.read_text())
    assert validate_manifest(manifest) == []
    spec = manifest["spec"]
    assert manifest["kind"] == "RayJob" and spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypoint"] == "janus pretrain --config small run_dir=/checkpoints/pretrain shards=/data/shards"
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 4
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/checkpoints", "/dev/shm"}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in workers["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"corpora", "runs"}


def test_schema_check_catches_wrong_types_and_unknown_fields():
    good = render(K8sJob(["janus", "pretrain"], image="img:1"))
    assert validate_manifest(good) == []
    typo = copy.deepcopy(good)
    typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    assert any("replica: field not in the RayJob schema" in p for p in validate_manifest(typo))
    wrong = copy.deepcopy(good)
    wrong["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = "two"
    assert any("is not of type 'integer'" in p for p in validate_manifest(wrong))
    missing = copy.deepcopy(good)
    del missing["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("'groupName' is a required property" in p for p in validate_manifest(missing))


@pytest.mark.parametrize("args,message", [
    (["--image", "img:1", "--workers", "0", "--", "janus", "pretrain"], "at least 1 worker"),
    (["--", "janus", "pretrain"], "--image"),
    (["--image", "img:1", "--", "janus", "pretrain"], "kubectl"),  # not installed, or no cluster configured
])
def test_bad_k8s_submissions_are_one_line(args, message):
    done = _cli(*args)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("janus submit: error:")
