"""How the command line turns library errors into exit codes (docs/contracts.md, Contract 3).

0 success, 2 bad input (one paragraph naming file, field and allowed values; no traceback),
1 internal error or a study whose every replicate failed. Shared by every command module.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback

import click

from analysis.errors import AnalysisInputError

from .errors import StudyFailed


def _fail_bad_input(err: AnalysisInputError) -> None:
    click.echo(f"trialsim: bad input: {err}", err=True)
    sys.exit(2)


def handle_errors(fn):
    """Turn library errors into exit codes: BadInput → 2, StudyFailed and anything else → 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnalysisInputError as err:  # BadInput (simulator) is one too
            _fail_bad_input(err)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except StudyFailed as err:  # nothing to fix in the input; the message says what failed
            click.echo(f"trialsim: {err}", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except OSError as err:
            if err.errno not in _USER_FIXABLE:
                _fail_internal(err)
            where = f" {err.filename}" if err.filename else ""
            click.echo(f"trialsim: cannot write{where}: {err.strerror} (free space or choose another --out)", err=True)
            sys.exit(2)
        except Exception as err:
            _fail_internal(err)

    return wrapper


# a full disk, a read-only or forbidden folder: the user can fix these, nothing is wrong inside
_USER_FIXABLE = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}


def _fail_internal(err: BaseException) -> None:
    if os.environ.get("TRIALSIM_DEBUG"):
        traceback.print_exc()
    click.echo(
        f"trialsim: internal error: {err.__class__.__name__}: {err} (set TRIALSIM_DEBUG=1 for the traceback)",
        err=True,
    )
    sys.exit(1)
