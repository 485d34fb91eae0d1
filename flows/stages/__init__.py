"""The pipeline's stages, one file each; the order is ``flows.pipeline.PIPELINE``.

Rerun one stage by hand on an existing run folder (its saved config is used):

    python -m flows.stages score runs/run-1a2b3c
"""
