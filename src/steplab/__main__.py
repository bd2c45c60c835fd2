"""``python -m steplab`` runs the CLI.

A process that joined a torch.distributed process group (a rank of
``steplab train --nproc``) ends through :func:`steplab.train.teardown.exit_process`,
with the exit code it would have had: gloo's worker threads can abort the
interpreter's teardown (that module's docstring).
"""

import sys
import traceback

from steplab.cli import main


def _joined() -> bool:
    teardown = sys.modules.get("steplab.train.teardown")
    return teardown is not None and bool(teardown.joined())


def _code(exc: BaseException) -> int:
    """The exit code ``exc`` would have ended the interpreter with."""
    if isinstance(exc, SystemExit):  # as sys.exit(code) treats its code
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    traceback.print_exc()
    return 1


def _run() -> int:
    try:
        return main()
    except BaseException as exc:
        if not _joined():
            raise
        return _code(exc)


code = _run()
if _joined():
    sys.modules["steplab.train.teardown"].exit_process(code)
sys.exit(code)
