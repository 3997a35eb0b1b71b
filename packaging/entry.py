"""The packaged app's one executable: the desktop app, and every process the app starts from its own bundle.

A bundle has no Python interpreter to run ``python -m distill_studio.engine.cli``, so the executable understands the
few interpreter switches the app and its launchers use to start engine processes, and nothing else:

    DistillStudio                                    the desktop app (arguments as `distill-studio`)
    distill ARGS                                     the `distill` command (the same program under its second
                                                     name: a console executable, also on Windows)
    DistillStudio -m distill_studio.engine.cli ARGS  the `distill` command (a run, an Azure submission, a plan)
    DistillStudio -m MODULE ARGS                     one of ALLOWED_MODULES as `python -m` runs it: the run's console
                                                     logger, accelerate's launcher and torch's elastic agent (which
                                                     start the ranks of a multi-process run as `-u -m MODULE`)

``sys.executable`` in a frozen app is this executable, so the app's launch code needs no branch for the bundle: it
starts ``[sys.executable, "-m", "distill_studio.engine.cli", ...]`` in both worlds.
"""
from __future__ import annotations

import runpy
import sys

ALLOWED_MODULES = (
    "distill_studio.engine.cli",
    "distill_studio.engine.train",
    "distill_studio.gui.monitor.logged_exec",
    "accelerate.commands.launch",
    "torch.distributed.run",
)
# interpreter flags a launcher may put before -m (unbuffered, no bytecode, isolated): meaningless in a bundle
IGNORED_FLAGS = ("-u", "-B", "-E", "-s", "-I", "-O")


def dispatch(argv: list[str], prog: str = "DistillStudio") -> tuple[str, list[str]]:
    """("gui", args) or ("module", [MODULE, *args]) for the executable's arguments (without argv[0]); ``prog``: the
    name it was started as."""
    args = list(argv)
    name = prog.replace("\\", "/").rsplit("/", 1)[-1].lower().removesuffix(".exe")
    if name == "distill" and not (args and args[0] in ("-m", *IGNORED_FLAGS)):
        return "module", ["distill_studio.engine.cli", *args]
    while args and args[0] in IGNORED_FLAGS:
        args = args[1:]
    if args and args[0] == "-m":
        if len(args) < 2:
            raise SystemExit("-m needs a module name")
        module = args[1]
        if module not in ALLOWED_MODULES:
            raise SystemExit(f"-m {module}: this executable runs only {', '.join(ALLOWED_MODULES)}")
        return "module", [module, *args[2:]]
    if args and args[0] == "-c":
        raise SystemExit("-c: this executable is Distill Studio, not a Python interpreter")
    return "gui", args


def main() -> None:
    import multiprocessing

    multiprocessing.freeze_support()
    kind, args = dispatch(sys.argv[1:], sys.argv[0])
    if kind == "module":
        sys.argv = [sys.argv[0], *args[1:]]
        runpy.run_module(args[0], run_name="__main__", alter_sys=True)
        return
    from distill_studio.gui.app import main as gui_main

    raise SystemExit(gui_main(args))


if __name__ == "__main__":
    main()
