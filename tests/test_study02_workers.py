"""Study 02's grid in worker processes (through workbench.executors.map_jobs) gives the same records
as in one process, and run_study builds its own inputs from the config."""
import pytest
import torch


def test_study02_two_workers_equal_one():
    """Also: run_study builds its own inputs from the config (seeding with cfg.seed first), the same
    inputs as build_inputs after seeding."""
    from epi_utils.isolation_study import Config, study
    from epi_utils.isolation_study.inputs import build_inputs
    from epi_utils.workbench import runs
    from epi_utils.workbench.contract import ConfigError

    torch.set_num_threads(1)
    common = dict(design="two_stage", world_tasks=("fact_qa", "format_conversion"), device="cpu",
                  model_size="default", pretrain=False, n_seeds=2, n_train_per_task=8,
                  n_val_per_task=4, n_test_per_task=4, n_train_eval_per_task=2, steps_per_stage=4, batch_size=4,
                  mask_update_interval=2, warmup_steps=1, probe_batches=1, replay_batches=1, replay_samples=2,
                  ratios=(0.2,), methods=("cpi_after_stage", "epi_frozen"), bounds=("full_sft", "ewc"),
                  ewc_lambdas=(1.0, 1e4))
    one = Config(workers=1, **common)
    serial = study.run_study(one)
    runs.seed_everything(one.seed)
    parallel = study.run_study(Config(workers=2, **common), inputs=build_inputs(one))
    assert parallel.ewc_lambda == serial.ewc_lambda and parallel.ewc_tuning == serial.ewc_tuning
    assert len(serial.records) == 2 * (2 + 2) == len(parallel.records)
    for a, b in zip(serial.records, parallel.records):
        assert (a.method, a.seed, a.ratio) == (b.method, b.seed, b.ratio)
        assert a.test == b.test and a.train == b.train and a.tokens == b.tokens
        assert a.losses == b.losses and len(a.losses) == 8 and len(set(a.losses)) > 1  # bit-identical training
        assert a.moved_owned_stage0 == b.moved_owned_stage0 or (a.moved_owned_stage0 != a.moved_owned_stage0
                                                                and b.moved_owned_stage0 != b.moved_owned_stage0)
    with pytest.raises(ConfigError, match="workers"):
        Config(workers=0)
    with pytest.raises(ConfigError, match="Config.workers: must be 1 on cuda with the local executor"):
        Config(workers=2, device="cuda")  # the default workers is 2 (the cpu profile)
    Config(workers=2, device="cuda", executor="ray", executor_gpus=1)  # on a cluster each run asks for a GPU
    assert Config(executor="slurm", executor_partition="gpu", executor_time="1:00:00").executor_options() == \
        {"partition": "gpu", "time": "1:00:00", "gpus": 0}
    assert Config(executor="ray").executor_options() == {"address": None, "gpus": 0.0}
    with pytest.raises(ConfigError, match="Config.executor: is local, so executor_address"):
        Config(executor_partition="gpu")
    assert not study._SHARED  # the parent keeps no reference to the shared inputs after a study
