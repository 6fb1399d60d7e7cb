"""A one-node Slurm cluster on this machine (Debian's slurm-wlm + munge), for tests and for trying
`janus submit slurm` without a real cluster. Needs root. `LocalSlurm(dir).start()` writes a slurm.conf
for this host, starts munged, slurmctld and slurmd, and waits until the node is idle; `stop()` stops
what it started. Client commands find the cluster through SLURM_CONF (see `env`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from janus.parallel import free_port


class LocalSlurm:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory).resolve()
        self.procs: list[int] = []
        self.started_munge = False

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf")}

    @staticmethod
    def install() -> None:
        """apt-get install slurm-wlm and munge when absent (root only)."""
        if shutil.which("slurmctld") and shutil.which("munged"):
            return
        if os.geteuid() != 0:
            raise RuntimeError("installing Slurm needs root: apt-get install slurm-wlm munge")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], check=True, env=env,
                       stdout=subprocess.DEVNULL)

    def start(self, timeout: float = 60) -> "LocalSlurm":
        self.install()
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        fields = dict(item.split("=", 1) for item in node.split())
        host = fields["NodeName"]
        memory = int(int(fields.get("RealMemory", "2048")) * 0.8)
        d = self.dir
        (d / "slurm.conf").write_text(f"""ClusterName=janus-local
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120: the requeue test's idle time)
AuthInfo=cred_expire=30
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=60
MinJobAge=3600
NodeName={host} CPUs={fields['CPUs']} Boards={fields.get('Boards', 1)} SocketsPerBoard={fields.get('SocketsPerBoard', 1)} CoresPerSocket={fields.get('CoresPerSocket', fields['CPUs'])} ThreadsPerCore={fields.get('ThreadsPerCore', 1)} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
            self.started_munge = True
        env = self.env
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.Popen([daemon, "-D", "-f", str(d / "slurm.conf")], env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(d / "log" / f"{daemon}.stderr", "w"), start_new_session=True)
            self.procs.append(proc.pid)
            time.sleep(1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout
            if out.strip() == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local Slurm node did not become idle in {timeout:.0f} s: see {d / 'log'}")

    def job(self, job_id: str) -> dict:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                             env=self.env).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def stop(self) -> None:
        for pid in self.procs:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.procs:
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                    os.waitpid(pid, os.WNOHANG)
                    time.sleep(0.1)
                except (ProcessLookupError, ChildProcessError):
                    break
        self.procs = []
        if self.started_munge:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)
            self.started_munge = False
