"""`epi costs`: each study's timings folded into additive parts (hand-computed), the pretraining
read from progress.log, and the Markdown table of the newest run of each study."""
import json

import pytest

from epi_utils.workbench import cli, costs
from epi_utils.workbench.progress import pretrain_log_line


def test_parts_of_every_study_shape():
    # study 01: seconds per run as lists
    assert costs.cost_parts({"seconds_per_run": [70.0, 30.5], "statistics_seconds_per_run": [5.0, 6.0]}) == {
        "runs": 100.5, "statistics per run": 11.0}
    # study 02: per arm, plus a total that is not a part
    assert costs.cost_parts({"seconds/epi": 10.0, "seconds/ewc_tuning": 40.0, "seconds/total": 50.0}) == {
        "ewc tuning": 40.0, "epi": 10.0}
    # study 03: the same stage of every world and held-out setting sums into one part
    assert costs.cost_parts({"seed0_sft": 30.0, "seed1_sft": 20.0, "setting0_seed1_sft": 5.0, "seed0_probe": 1.5,
                             "forest_diagnosis": 2.0, "total": 60.0}) == {"sft": 55.0, "forest diagnosis": 2.0,
                                                                         "probe": 1.5}
    # study 04: totals, the whole run and the kernel's CPU seconds are not parts
    assert costs.cost_parts({"study_encoder_0_s": 400.0, "study_decoders_s": 300.0, "study_total_s": 700.0,
                             "synthetic_s": 100.0, "run_study_s": 810.0, "kernel_cpu_s": 800.0}) == {
        "encoder 0": 400.0, "decoders": 300.0, "synthetic": 100.0}
    # study 05: a mean per epoch is not a part
    assert costs.cost_parts({"wall_seconds": 120.0, "train_seconds": 80.0, "evaluate_seconds": 40.0,
                             "seconds_per_epoch_mean": 1.5}) == {"train": 80.0, "evaluate": 40.0}
    assert list(costs.cost_parts({"a_s": 1.0, "b_s": 3.0, "c_s": 2.0})) == ["b", "c", "a"]  # largest first


def test_malformed_timing_names_the_key():
    with pytest.raises(ValueError, match=r"timings\['seed0_sft'\]"):
        costs.cost_parts({"seed0_sft": "slow"})


def _run(root, study, run_id, *, timings, wall, log=""):
    d = root / study / run_id
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"study": study, "status": "success", "profile": "cpu",
                                                "started_at": run_id, "wall_time_s": wall}))
    (d / "results.json").write_text(json.dumps({"metrics": {}, "headlines": [], "timings": timings}))
    (d / "progress.log").write_text(log)
    return d


def test_table_of_the_newest_runs(tmp_path, capsys):
    log = ("world: 1/2 world, elapsed 0:40\n"
           "pretrained a tiny world model (0f43309c727f0c80, 25 epochs) in 30.0 s\n"
           "pretrained a tiny world model (22003d33c3a5e252, 25 epochs) in 42.0 s\n")
    _run(tmp_path, "03_ilp_taxonomy", "20261207-010000-cpu-aaaa", timings={"seed0_sft": 1.0}, wall=60.0)
    _run(tmp_path, "03_ilp_taxonomy", "20261207-020000-cpu-bbbb",
         timings={"seed0_sft": 120.0, "seed1_sft": 60.0, "seed0_world_and_base_model": 60.0, "total": 240.0},
         wall=150.0, log=log)
    runs = costs.newest_runs(tmp_path)
    assert [r.name for r in runs] == ["20261207-020000-cpu-bbbb"]
    assert costs.pretrain_seconds(runs[0] / "progress.log") == (2, 72.0)
    produced = tmp_path / "produced.log"   # the line the pretraining writes (lm.models) parses back
    produced.write_text(pretrain_log_line("0f43309c727f0c80", epochs=25, seconds=12.34) + "\n")
    assert costs.pretrain_seconds(produced) == (1, 12.3)
    row = costs.costs_table(runs).iloc[0]
    assert row["wall (min)"] == 2.5 and row["parts summed (min)"] == 4.0
    assert row["top costs (min, share of the parts)"] == "sft 3.0 (75%); world and base model 1.0 (25%)"
    assert row["pretraining inside (min)"] == "2 models, 1.2"
    assert cli.main(["costs", "--out", str(tmp_path), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "| 03_ilp_taxonomy | 20261207-020000-cpu-bbbb | 2.5 | 4.0 | sft 3.0 (75%) | 2 models, 1.2 |" in out


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["costs", "--out", str(tmp_path)]) != 0
    assert "no successful 'cpu' run" in capsys.readouterr().err
