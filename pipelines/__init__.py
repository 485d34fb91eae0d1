"""Core of the pipeline: example schema, IO, LLM backends, batched scoring, config, export, fine-tuning.

Everything here runs without Prefect; `flows/` only orchestrates these functions.
"""
