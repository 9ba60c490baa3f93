"""Command line: `closedloop run [--preset NAME] [--out DIR] [--overwrite] [--section.key=value ...]`.

Same as `python -m training run ...`. `closedloop run --help` lists every option with its default and unit.
Bad input (an unknown option, a value out of range, a missing or unusable corpus, a run directory made with
another config or resolving its `auto` numerics otherwise, a run directory in use by another process) prints one
line `closedloop: error: ...` and exits with status 2 before anything is written.
Running the same command again resumes the run. Tested in tests/test_cli.py.
"""
from __future__ import annotations

import os
import shutil
import sys

USAGE = """usage: closedloop run [--preset NAME] [--out DIR] [--overwrite] [--section.key=value ...]

Runs the closed loop: generation 0 trains on real text, every later generation on a mix of a fraction
mix.fresh_fraction of real text and the previous model's samples at sample.temperature.
Running the same command again resumes after the last finished generation.

  --preset NAME        starting config: {presets} (default: default)
  --out DIR            run directory (default: runs/<preset>-T<temperature>-lam<fresh_fraction>-<workflow>-s<seed>)
  --overwrite          delete an existing run directory and start afresh
  -h, --help           this text

options (--key=value; defaults shown are those of the chosen preset):
"""


class UsageError(ValueError):
    pass


def parse_args(argv: list[str]) -> tuple[dict, dict[str, str]]:
    """Split argv into CLI flags and dotted config overrides (`--a.b=v` or `--a.b v`)."""
    flags = {"preset": "default", "out": None, "overwrite": False, "help": False}
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg == "--overwrite":
            flags["overwrite"] = True
        elif arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UsageError(f"--{key} needs a value (--{key}=VALUE)")
                value, i = argv[i + 1], i + 1
            if not key:
                raise UsageError("empty option name")
            if key in ("preset", "out"):
                flags[key] = value
            else:
                overrides[key] = value
        else:
            raise UsageError(f"unexpected argument {arg!r} (options look like --section.key=value)")
        i += 1
    return flags, overrides


def default_run_dir(preset: str, cfg) -> str:
    return os.path.join("runs", f"{preset}-T{cfg.sample.temperature:g}-lam{cfg.mix.fresh_fraction:g}-"
                                f"{cfg.mix.workflow}-s{cfg.seed}")


def cmd_run(argv: list[str]) -> int:
    from training.runlock import probe

    flags, overrides = parse_args(argv)
    if flags["out"] and not flags["help"]:
        probe(flags["out"])  # before torch is imported: a directory in use is refused within seconds
    from training import distributed, presets
    from training.config import apply_overrides, help_lines
    from training.prepare import prepare

    cfg = presets.get(flags["preset"])
    if flags["help"]:
        print(USAGE.format(presets=", ".join(presets.PRESETS)) + "\n".join(help_lines(cfg)))
        return 0
    cfg = apply_overrides(cfg, overrides)
    run_dir = flags["out"] or default_run_dir(flags["preset"], cfg)
    if flags["overwrite"] and os.path.isdir(run_dir) and os.listdir(run_dir) \
            and not os.path.exists(os.path.join(run_dir, "config.json")):
        raise UsageError(f"--overwrite refuses to delete {run_dir}: it is not a closedloop run directory")
    probe(run_dir)  # a directory in use is refused before the slow preparation (its lock is taken later)
    ok = False
    try:
        prep = prepare(cfg, None if flags["overwrite"] else run_dir)  # every input check, before any write
        code = _run_prepared(prep, cfg, run_dir, flags["overwrite"], argv)
        ok = True
        return code
    finally:
        distributed.shutdown(ok)


def _run_prepared(prep, cfg, run_dir: str, overwrite: bool, argv: list[str]) -> int:
    """The run after its inputs were checked; under torchrun only rank 0 prints, locks and deletes.

    The run directory's lock is taken first (training/runlock.py): a directory in use is refused (one line, exit
    2) before anything in it is read, deleted or written; a directory this call created for its lock and then
    refused (another config) is removed again."""
    from training import distributed
    from training.loop import check_resume, run_loop
    from training.runlock import NAME as LOCK_NAME, acquire_lock

    main = distributed.is_main()
    say = (lambda line: print(line, file=sys.stderr)) if main else (lambda line: None)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UsageError(f"--out {run_dir} is a file, not a directory")
    existed = os.path.isdir(run_dir)
    if not overwrite:
        check_resume(prep, run_dir)  # read only: another config is refused without touching the directory
    distributed.barrier()  # every rank has looked at run_dir before rank 0 creates it for the lock
    lock = acquire_lock(run_dir, say)
    try:
        distributed.barrier()  # every rank has checked run_dir (cmd_run) before rank 0 may delete it
        if not overwrite:
            try:
                done = check_resume(prep, run_dir)
            except ValueError:
                if main and not existed:
                    lock.release()
                    lock = None
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
            if done >= cfg.loop.generations:
                say(f"{run_dir}: all {cfg.loop.generations} generations are done (raise --loop.generations to extend)")
            elif done:
                say(f"{run_dir}: resuming after generation {done - 1}")
        elif main:
            for name in os.listdir(run_dir):  # everything but the lock this process holds
                path = os.path.join(run_dir, name)
                if name != LOCK_NAME:
                    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        distributed.barrier()  # no rank looks at run_dir before rank 0 has deleted it
        say(f"run directory: {run_dir}   (tensorboard --logdir {os.path.dirname(run_dir) or '.'})"
            + (f"   [{distributed.world_size()} processes]" if distributed.world_size() > 1 else ""))
        summary = run_loop(prep, run_dir, argv=["run", *argv], locked=True)
    finally:
        if lock is not None:
            lock.release()
    final = summary.get("final", {})
    say(f"done: {summary['generations']} generations; final val/bpc {final.get('val/bpc')}, "
        f"val/entropy {final.get('val/entropy')} bits -> {os.path.join(run_dir, 'summary.json')}")
    from training.board import tensorboard_hint

    for line in tensorboard_hint(os.path.dirname(os.path.normpath(run_dir)) or ".",
                                 run_filter=os.path.basename(os.path.normpath(run_dir))):
        say(line)
    return 0


SWEEP_USAGE = """usage: closedloop sweep FILE [--out DIR] [--workers N] [--per-gpu K] [--backend local|ray] [--address ADDR] [--dry-run]

Runs every point of a grid file (see sweeps/debug.yaml); resumable: run it again to finish what is left.
  --out DIR        sweep folder (default: runs/<file stem>)
  --workers N      points run at once (default 1); on CPU the cores are split among them
  --per-gpu K      on CUDA, points sharing one GPU (default 1)
  --backend B      local (default) | ray (pip install -e .[ray]); --address ADDR of an existing Ray cluster
  --dry-run        list the points and exit
Exit status: the number of failed points (2 also for a bad grid file)."""


def _flag_args(argv: list[str], names: dict) -> tuple[list[str], dict]:
    """Positional arguments and --name VALUE / --name=VALUE flags (names maps flag -> default; bool = switch)."""
    pos, flags, i = [], dict(names), 0
    while i < len(argv):
        a = argv[i]
        key, eq, val = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if a in ("-h", "--help"):
            flags["help"] = True
        elif key in names and isinstance(names[key], bool):
            flags[key] = True
        elif key in names:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"--{key} needs a value")
                val, i = argv[i + 1], i + 1
            flags[key] = type(names[key])(val) if names[key] is not None else val
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            pos.append(a)
        i += 1
    return pos, flags


def cmd_sweep(argv: list[str]) -> int:
    from training.report import write_report
    from training.sweep import load_grid, run_sweep

    pos, f = _flag_args(argv, {"out": None, "workers": 1, "per-gpu": 1, "backend": "local", "address": None,
                               "dry-run": False, "help": False})
    if f["help"]:
        print(SWEEP_USAGE)
        return 0
    if len(pos) != 1:
        raise UsageError("closedloop sweep takes one grid file (see closedloop sweep --help)")
    if f["workers"] < 1 or f["per-gpu"] < 1 or f["backend"] not in ("local", "ray"):
        raise UsageError("--workers and --per-gpu must be >= 1 and --backend local or ray")
    grid = load_grid(pos[0])
    out = f["out"] or os.path.join("runs", os.path.splitext(os.path.basename(pos[0]))[0])
    if f["dry-run"]:
        for p in grid.points:
            print(f"{p.name}\t{os.path.join(out, p.name)}\tclosedloop run {' '.join(p.args)}")
        print(f"{len(grid.points)} points", file=sys.stderr)
        return 0
    result = run_sweep(grid, out, f["workers"], f["per-gpu"], f["backend"], f["address"],
                       say=lambda s: print(s, file=sys.stderr, flush=True))
    for path in write_report(out, say=lambda s: print(s, file=sys.stderr, flush=True)):
        print(path)
    from training.board import tensorboard_hint

    for line in tensorboard_hint(out):
        print(line, file=sys.stderr)
    return min(len(result["failed"]), 100)


def cmd_report(argv: list[str]) -> int:
    from training.report import write_report

    pos, f = _flag_args(argv, {"measure": "val/entropy", "help": False})
    if f["help"] or len(pos) != 1:
        print("usage: closedloop report SWEEP_DIR [--measure val/entropy]   (summary.csv, summary.md, figures)")
        return 0 if f["help"] else 2
    if not os.path.exists(os.path.join(pos[0], "sweep.yaml")):
        raise UsageError(f"{pos[0]} is not a sweep folder (no sweep.yaml)")
    for path in write_report(pos[0], f["measure"], say=lambda s: print(s, file=sys.stderr, flush=True)):
        print(path)
    return 0


def cmd_theory(argv: list[str]) -> int:
    from training.theory_cli import cmd_theory as theory  # lazy: the theory needs numpy only

    return theory(argv)


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "report": cmd_report, "theory": cmd_theory}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: closedloop {{{','.join(COMMANDS)}}} ...   (closedloop COMMAND --help for the options)")
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"closedloop: error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return cmd(argv[1:])
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        # Input errors are found before anything is written: one line, status 2, no traceback.
        print(f"closedloop: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("closedloop: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
