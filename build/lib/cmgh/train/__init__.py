"""The pre-training program (knows no Snakemake): ``setup`` builds a run's parts from the config,
``state`` saves and restores them, ``step`` is the one training step, ``loop`` walks the steps,
``run`` makes one tracked run of them (``cmgh pretrain``);
``batches``, ``distributed``, ``precision`` and ``schedule`` are its pieces."""
