"""pipeline: ingest to Zarr, incoming partitions, anomaly scoring, outputs and manifests.

Imports ``gmm_engine``; never imports ``flows`` or Prefect.
"""
