"""Where jobs run (local Ray, a Ray cluster, Slurm, Kubernetes) and the `janus` command line."""
