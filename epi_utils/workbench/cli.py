"""The ``epi`` command: run studies, sweeps, reports and data management from the shell.

    epi run NOTEBOOK [--profile P] [-p NAME VALUE]... [--out DIR]
    epi sweep NOTEBOOK -p seed 0,1,2 [-p NAME v1,v2]... [--profile P] [--jobs N] [--out DIR]
              [--executor local|ray|slurm] [--address A] [--partition P --time T --gpus N]
    epi report [--out DIR]
    epi publish [--profile P] [--out DIR] [--run RUN_DIR --as LABEL]
    epi params NOTEBOOK [--sync]             # list a notebook's parameters and profiles; --sync
                                             # rewrites its parameters cell from the study's config
    epi lab-params NOTEBOOK [--profile P] [-p NAME VALUE]...   # a copy for JupyterLab with those values
    epi data check [NAME]... | epi data fetch NAME  # check hashes every known file (exit 1 when any file is
                                                    # missing or corrupt); fetch verifies them

Before a kernel starts, ``epi run`` / ``epi sweep`` build the notebook's config
(:func:`epi_utils.studies.config_class`) from every effective parameter, so a value the study refuses
fails in seconds with the config's message; notebooks without a config are skipped.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from epi_utils.workbench.params import NotebookConventionError, ParameterError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epi", description="Run the workbench's studies and build their reports.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute one notebook into reports/<study>/<run-id>/")
    run.add_argument("notebook", type=Path)
    run.add_argument("--profile", default="cpu", help="parameter profile: notebooks/params/<study>/<profile>.yaml (default cpu)")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override one parameter (repeatable)")
    run.add_argument("--out", type=Path, default=None, help="reports folder (default <repo>/reports)")
    run.add_argument("--run-id", default=None, help=argparse.SUPPRESS)
    run.add_argument("--rehearse", action="store_true",
                     help="run the profile's code path on CPU at toy scale (a tiny random model of the same "
                          "family, 8 local samples per data set) and print its full-scale GPU memory and GPU-hours")

    sw = sub.add_parser("sweep", help="run a cartesian grid of parameters and summarise over seeds")
    sw.add_argument("notebook", type=Path)
    sw.add_argument("--profile", default="cpu")
    sw.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "V1,V2,..."),
                    help="a parameter and its comma-separated values (repeatable)")
    sw.add_argument("--jobs", type=_positive_int, default=1, help="grid points run at a time (default 1)")
    sw.add_argument("--out", type=Path, default=None)
    sw.add_argument("--executor", choices=("local", "ray", "slurm"), default="local",
                    help="where the points run: local processes (default), a Ray cluster, SLURM (submitit)")
    sw.add_argument("--address", default=None, help="ray: an existing cluster (default: a local one for the sweep)")
    sw.add_argument("--partition", default=None, help="slurm: partition")
    sw.add_argument("--time", default=None, help="slurm: time limit per point (minutes or HH:MM:SS)")
    sw.add_argument("--gpus", type=float, default=0, help="ray/slurm: GPUs per point (default 0)")

    rep = sub.add_parser("report", help="rebuild reports/index.html from the runs on disk")
    rep.add_argument("--out", type=Path, default=None)

    pub = sub.add_parser("publish", help="copy the newest successful run of each study into reports/published/")
    pub.add_argument("--profile", default="cpu",
                     help="cpu (default) -> reports/published/; any other profile -> reports/published/<profile>/")
    pub.add_argument("--out", type=Path, default=None)
    pub.add_argument("--run", dest="runs", type=Path, action="append", default=[],
                     help="publish this run folder instead of the newest (repeatable; one per study)")
    pub.add_argument("--as", dest="label", default=None,
                     help="publish under reports/published/<label>/ (e.g. cpu-long-5way5shot for one part of a grid)")

    cost = sub.add_parser("costs", help="where each study's time went: the top costs of its newest run, as Markdown")
    cost.add_argument("--out", type=Path, default=None, help="reports folder (default <repo>/reports)")
    cost.add_argument("--profile", default="cpu", help="the profile whose newest runs are read (default cpu)")
    cost.add_argument("--top", type=_positive_int, default=4, help="parts shown per study (default 4)")

    par = sub.add_parser("params", help="list a notebook's parameters and available profiles")
    par.add_argument("notebook", type=Path, nargs="+")
    par.add_argument("--sync", action="store_true",
                     help="rewrite the parameters cell from the study's config (the one place defaults are declared)")

    lab = sub.add_parser("lab-params", help="write a copy of a notebook with a profile's values for JupyterLab "
                                            "(notebooks/lab/, ignored by git); the committed notebook is not touched")
    lab.add_argument("notebook", type=Path)
    lab.add_argument("--profile", default="cpu")
    lab.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))

    data = sub.add_parser("data", help="check or fetch data sets under $EPI_DATA_DIR")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="report present and missing data sets and offline model packages; "
                                          "exit 1 when a file of a data set checked is missing or corrupt")
    check.add_argument("names", nargs="*", metavar="NAME", help="check only these data sets (default: all)")
    fetch = dsub.add_parser("fetch", help="download a data set from its public source")
    fetch.add_argument("name")
    fetch.add_argument("--dest", type=Path, default=None)
    return parser


def _positive_int(text: str) -> int:
    """``--jobs``: a whole number of at least 1 (``--jobs -3`` used to run one worker silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def _split_values(raw: str) -> list[str]:
    text = raw.strip()
    if text.startswith("[") and text.endswith("]") and text.count("[") > 1:
        import ast
        return [json.dumps(v) for v in ast.literal_eval(text)]
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt as exc:  # report.RunInterrupted / sweep.SweepInterrupted: already recorded
        where = getattr(exc, "run_dir", None) or getattr(exc, "out", None)
        print(f"epi: interrupted{': ' + str(where) + ' marked interrupted' if where else ''}", file=sys.stderr)
        return 130
    except (ParameterError, NotebookConventionError, FileNotFoundError, FileExistsError, ValueError,
            ConnectionError, TimeoutError) as exc:
        print(f"epi: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # datasets.FetchError and other I/O failures: one line, no traceback
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            print(f"epi: error: no space left on the device{where}; free some space, or write the runs "
                  "elsewhere with --out DIR", file=sys.stderr)
            return 2
        if not getattr(exc, "filename", None) and type(exc).__name__ != "FetchError":
            raise
        print(f"epi: error: {exc}", file=sys.stderr)
        return 2


def config_check(notebook: Path):
    """A callable that builds the notebook's config (:func:`epi_utils.studies.config_class`) from a run's
    effective parameters, raising its ``ConfigError`` (a ``ParameterError``) for a value the study
    refuses; ``None`` for a notebook without a config. Only this module looks configs up (the
    import-linter contract keeps the runner's library code free of the study map)."""
    from epi_utils.studies import config_class

    try:
        cls = config_class(notebook)
    except (ImportError, AttributeError):  # a study package without a Config (yet): the kernel checks
        return None
    if cls is None:
        return None

    def check(values):
        return cls.from_parameters(values)

    return check


def _cmd_run(args) -> int:
    from epi_utils.workbench.report import run_notebook

    overrides = dict(args.param)
    dup = {n for n, _ in args.param if sum(1 for m, _ in args.param if m == n) > 1}
    if dup:
        raise ParameterError(f"parameter(s) {sorted(dup)} given more than once")
    if args.rehearse:
        from epi_utils.workbench.rehearsal import rehearsal_overrides

        overrides.update(rehearsal_overrides(args.notebook, overrides))
    run_dir = run_notebook(args.notebook, profile=args.profile, overrides=overrides, reports_dir=args.out,
                           run_id=args.run_id, validate=config_check(args.notebook))
    record = json.loads((run_dir / "metrics.json").read_text())
    print(f"{record['status']}: {run_dir}")
    from epi_utils.workbench.report import modified_data_files

    for name in modified_data_files(record):
        print(f"  warning: the run read {name}, which differs from its known SHA-256 (see `epi data check`)",
              file=sys.stderr)
    if record["status"] != "success":
        print(f"  error: {record.get('error', {}).get('message')}", file=sys.stderr)
        return 1
    return 0


def _cmd_sweep(args) -> int:
    from epi_utils.workbench.sweep import sweep

    grid = {name: _split_values(values) for name, values in args.param}
    if not grid:
        raise ParameterError("epi sweep needs at least one -p NAME V1,V2,... (e.g. -p seed 0,1,2)")
    options = {"ray": {"address": args.address, "gpus": args.gpus},
               "slurm": {"partition": args.partition, "time": args.time, "gpus": int(args.gpus)}}.get(args.executor, {})
    given = {"--address": args.address, "--partition": args.partition, "--time": args.time, "--gpus": args.gpus}
    unused = [flag for flag, value in given.items() if value and flag.lstrip("-") not in options]
    if unused:
        raise ParameterError(f"{', '.join(unused)} do(es) not apply to --executor {args.executor}")
    check = config_check(args.notebook)
    if check is not None:  # every point's config, before any kernel starts
        from epi_utils.workbench.params import effective_parameters, resolve_parameters
        from epi_utils.workbench.runs import check_run_request
        from epi_utils.workbench.sweep import expand_grid

        for point in expand_grid(grid):
            check_run_request(profile=args.profile, overrides=point, run_id=None)
            check(effective_parameters(args.notebook, resolve_parameters(args.notebook, profile=args.profile,
                                                                           overrides=point)))
    out = sweep(args.notebook, grid=grid, profile=args.profile, jobs=args.jobs, reports_dir=args.out,
                executor=args.executor, **options)
    print(f"summary: {out / 'summary.csv'}\n         {out / 'summary.html'}")
    listing = json.loads((out / "runs.json").read_text())
    failed = [r for r in listing if r["status"] != "success"]
    if failed:
        print(f"{len(failed)} of {len(listing)} runs failed", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args) -> int:
    from epi_utils.workbench.report import write_index

    print(write_index(args.out))
    return 0


def _cmd_costs(args) -> int:
    from epi_utils.workbench import costs
    from epi_utils.workbench.report import default_reports_dir

    reports = args.out if args.out is not None else default_reports_dir()
    print(costs.markdown(costs.costs_table(costs.newest_runs(reports, profile=args.profile), top=args.top)))
    return 0


def _cmd_publish(args) -> int:
    from epi_utils.workbench.report import publish

    print(publish(args.out, profile=args.profile, run_dirs=args.runs, label=args.label) / "index.html")
    return 0


def _cmd_params(args) -> int:
    from epi_utils.workbench.params import available_profiles, parse_parameters, sync_parameters_cell

    for notebook in args.notebook:
        if args.sync:
            from epi_utils.studies import config_class

            cfg_cls = config_class(notebook)
            if cfg_cls is None:
                raise NotebookConventionError(f"{notebook}: no config registered for it in epi_utils/studies.py")
            from epi_utils.workbench.contract import parameters_cell

            changed = sync_parameters_cell(notebook, parameters_cell(cfg_cls))
            print(f"{notebook}: parameters cell {'rewritten from the config' if changed else 'already matches the config'}")
            continue
        specs = parse_parameters(notebook)
        from epi_utils.studies import config_class

        try:
            cls = config_class(notebook)
        except (ImportError, AttributeError):
            cls = None
        defaults = cls.defaults() if cls is not None else {}
        edited = []
        for spec in specs.values():
            line = f"{spec.name}: {spec.type_name} = {spec.default!r}  # {spec.comment}"
            if spec.name in defaults and _differs(spec.default, defaults[spec.name]):
                edited.append(spec.name)
                line += f"   <- edited here; the study's default is {defaults[spec.name]!r}"
            print(line)
        print(f"profiles: {', '.join(available_profiles(notebook)) or 'none'}")
        if edited:
            print(f"{notebook}: parameters cell edited (e.g. in JupyterLab): {', '.join(edited)} differ from the "
                  f"study's config; `git diff {notebook}` shows the edit, `epi params {notebook} --sync` restores it")
    return 0


def _differs(a, b) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) != norm(b)


def _cmd_lab_params(args) -> int:
    from epi_utils.workbench.report import write_lab_copy

    overrides = dict(args.param)
    out = write_lab_copy(args.notebook, profile=args.profile, overrides=overrides,
                         validate=config_check(args.notebook))
    print(f"{out}\n  the '{args.profile}' profile's values{' and -p values' if overrides else ''} are in its "
          "'injected-parameters' cell; open it in JupyterLab and Run All (notebooks/lab/ is ignored by git)")
    return 0


def _cmd_data(args) -> int:
    from epi_utils.workbench import datasets

    if args.data_command == "fetch":
        print(datasets.fetch_dataset(args.name, dest=args.dest))
        return 0
    report = datasets.check_all(names=args.names or None)
    print(f"data folder: {report['data_dir']}")
    incomplete = []
    for name, info in report["datasets"].items():
        states = info["files"]
        here = sum(st != datasets.FILE_MISSING for st in states.values())  # corrupt files are present too
        state = ("corrupt" if info["corrupt"] else "complete" if not info["missing"]
                 else "partial" if here else "absent")
        corrupt = f", {len(info['corrupt'])} corrupt" if info["corrupt"] else ""
        print(f"  {name}: {state} ({here} of {len(states)} files present{corrupt})")
        for rel, st in states.items():
            if st != datasets.FILE_MISSING or here:
                print(f"      {st}: {rel}")
        if info["corrupt"] or info["missing"]:
            incomplete.append(f"{name} ({state})")
    if not args.names:
        print("offline model packages:")
        for pkg, info in report["model_packages"].items():
            print(f"  {pkg}: {'installed' if info['installed'] else 'NOT installed'} ({info['what']})")
    if incomplete:
        print(f"epi data check: {len(incomplete)} of {len(report['datasets'])} data sets not complete: "
              f"{', '.join(incomplete)}", file=sys.stderr)
        return 1
    return 0


#: subcommand -> handler (each takes the parsed arguments and returns the exit status)
COMMANDS = {"run": _cmd_run, "sweep": _cmd_sweep, "report": _cmd_report, "publish": _cmd_publish,
            "params": _cmd_params, "lab-params": _cmd_lab_params, "data": _cmd_data, "costs": _cmd_costs}


def _dispatch(args) -> int:
    return COMMANDS[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
