"""The pre-training program: loop, checkpoints, distributed set-up and precision (knows no Snakemake)."""
