"""Rerun one stage by hand on an existing run folder (its saved config is used):

    python -m flows.stages score runs/run-1a2b3c
    python -m flows.stages select runs/run-1a2b3c
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.config import PipelineConfig
from flows.pipeline import STAGE_NAMES, run_stage
from flows.run_folder import RunFolder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.stages", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGE_NAMES, help="the stage to (re)run")
    ap.add_argument("run_dir", help="an existing run folder (made by python -m flows.build_dataset)")
    ap.add_argument("--wait-lock", action="store_true",
                    help="if another process works in the run folder, wait for it instead of refusing")
    args = ap.parse_args(argv)
    run = RunFolder(Path(args.run_dir))
    try:
        cfg = PipelineConfig.model_validate_json(run.saved_config_json())
        with run.lock(wait=args.wait_lock):
            record = run_stage(args.stage, run, cfg)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shown = {k: v for k, v in record.items() if k in ("stage", "rows_in", "rows_out", "rejects", "seconds")}
    print(shown or record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
