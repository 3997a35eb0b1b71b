"""Runs a list of plans one after another in one process group: a test helper, started once per rank by torchrun
or by a test that acts as a cluster launcher (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    python tests/multiproc_runs.py CASES.json    # [{"plan": ..., "run_dir": ...}, ...]

Rank 0 writes the exit code of each run to CASES.out.json. Starting the processes once for many runs keeps the
contract test (every kind of option the planner can recommend) within a few minutes on two cores."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(cases_file: str) -> int:
    from distill_studio.engine.train.run import execute

    cases = json.loads(Path(cases_file).read_text())
    codes = {}
    for case in cases:
        codes[case["run_dir"]] = execute(Path(case["plan"]), Path(case["run_dir"]), resume=False,
                                         keep_process_group=True)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(cases_file).with_suffix(".out.json").write_text(json.dumps(codes, indent=1))
    import torch.distributed as dist

    if dist.is_initialized():  # down together, as a run does at its end
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from distill_studio.engine.train.__main__ import leave

    leave(main(sys.argv[1]))  # as a rank of a run ends
