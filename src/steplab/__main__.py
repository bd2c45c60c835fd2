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


def _run() -> int:
    try:
        return main()
    except SystemExit as exc:  # what sys.exit(code) would have made of it
        if not _joined():
            raise
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not _joined():
            raise
        return 130
    except Exception:
        if not _joined():
            raise
        traceback.print_exc()
        return 1


code = _run()
if _joined():
    sys.modules["steplab.train.teardown"].exit_process(code)
sys.exit(code)
