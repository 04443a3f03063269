"""Two-process DDP (gloo, CPU): EPI masks and weights identical on both ranks after every update."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ddp_masks_identical_on_two_processes(tmp_path):
    """Both engines in one torchrun launch (one process start and one set of imports for the two):
    trainer: transformers.Trainer + IsolationCallback under torchrun (accelerate DDP, gloo);
    loop: the minimal hooked_steps loop around a DDP model."""
    out = tmp_path / "ddp.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--standalone", "-m", "epi_utils.isolation.distributed",
           "--engine", "trainer", "loop", "--steps", "12", "--interval", "3", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results) == ["trainer", "loop"]
    for engine, res in results.items():
        assert res["engine"] == engine and res["world_size"] == 2 and res["n_checks"] >= 3, engine
        assert res["all_equal"], (engine, res["checks"])
        assert all(c["protected"] > 0 for c in res["checks"]), engine
    res = results["trainer"]  # each step: one task on both ranks, but different examples (so DDP synced them)
    assert res["steps"] == 12 and res["same_task_every_step"]
    assert res["different_batches_share"] == 1.0
