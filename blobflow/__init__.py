"""Azure glue: batches in Blob Storage, the upload CLI, and the model bundle and decision
log kept in Blob Storage.

Dependencies point one way: ``function_app.py`` -> ``blobflow`` -> ``features`` (the
pipeline), ``scoring`` (the model) and ``featurespec`` (the features row). Neither
``features`` nor ``scoring`` imports this package, and they do not import each other.

- ``naming``: containers, batch names, and the blob each output goes to;
- ``store``: the Blob Storage adapter (``BlobStore``), its per-batch lease lock, ``connect``;
- ``sink``: the ``features.publish.OutputSink`` that writes into ``curated/`` and
  ``quarantine/``;
- ``predict``: predictions and the drift report for a batch's features;
- ``metrics``: structured metrics as log lines (``drift_psi``);
- ``runner``: one batch through the pipeline, into the sink;
- ``commit``: the commit protocol (lock, ``_SUCCESS``, ``error.json``, ``_WITHDRAWN``),
  deletion events and the reconcile;
- ``bundle_source``, ``audit``: the model bundle and the decision log in Blob Storage;
- ``upload``: ``python -m blobflow.upload``.
"""
