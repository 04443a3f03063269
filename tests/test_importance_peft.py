"""ImportanceTracker(sensitivity) equals PEFT's AdaLoRA RankAllocator.update_ipt on the same gradients."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_tracker_matches_peft_adalora():
    pytest.importorskip("peft")
    from bench_importance import compare_with_peft

    res = compare_with_peft(n_updates=3, n_embd=32, n_layer=1)
    assert res["n_tensors"] > 0 and res["max_score"] > 0
    assert res["max_abs_diff"] <= 1e-6 * max(1.0, res["max_score"])
