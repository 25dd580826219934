"""Data: the datasets in their real formats, and the stages that make, fetch, extract and stream them.

Where things live:

- ``datasets/``: one module per dataset (``howto100m``, ``kinetics``, ``audioset``, ``msrvtt``,
  ``youtube8m``), each holding its columns, annotation readers and writers, items, generator plan,
  download clip list and annotation checks, and declaring its ``SPEC``; the package itself is the
  registry (:func:`cmgh.data.datasets.get`) the stages iterate over. Adding a dataset is one module
  there plus its name in the schema's ``data.datasets`` enum.
- ``io/``: reading and writing files: validated tables, TFRecords, media (PyAV read and write).
- ``synth/``: the generate stage (mini worlds drawn from shared latent concepts).
- ``download/``: the download stage (annotations and clips of the real datasets, with a manifest).
- ``extract/``: the extract stage: decoded ``.npy`` shards, packed tar shards, the vocabulary.
- ``stream/``: training-time loading: the pre-training stream over packed and decoded sources.

Kept import-free: importing a stage pulls in only what that stage needs.
"""
