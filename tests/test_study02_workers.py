"""Study 02's executor settings: the config refuses workers and executor options that cannot run,
and gives each executor its options. The grid itself in worker processes and on Ray (the same
records as in one process, run_study building its own inputs from the config) is in
tests/test_executors.py, which runs the one-process reference once for both (issue 34)."""
import pytest


def test_study02_executor_options_are_checked():
    from epi_utils.isolation_study import Config
    from epi_utils.workbench.contract import ConfigError

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
