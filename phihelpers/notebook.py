"""In IPython and Jupyter: phihelpers' ConfigError family shows as its message, not a traceback.

A lesson whose settings are wrong (a retired endpoint, a missing variable) should read one
paragraph that says what to set, not a stack trace through phihelpers. `import phihelpers` inside
IPython registers `show_config_error` with `shell.set_custom_exc`; the cell still fails (so
"Run All" stops there and nbval reports it), but what it shows is the message alone.
"""

from __future__ import annotations

import sys

from .config import ConfigError


def show_config_error(shell, etype, value, tb, tb_offset=None):
    """IPython custom exception handler: the message as the whole "traceback"."""
    stb = [str(value)]
    shell._showtraceback(etype, value, stb)  # Jupyter: an `error` output; a terminal: printed
    return stb


def install(shell=None) -> bool:
    """Register the handler in `shell` (default: the running IPython, if any).

    Leaves a shell alone that already has other custom exception handlers. True if installed.
    """
    if shell is None:
        if "IPython" not in sys.modules:  # not imported: we are not inside IPython
            return False
        shell = sys.modules["IPython"].get_ipython()
        if shell is None:
            return False
    handled = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if handled == (ConfigError,):
        return True  # already ours (phihelpers imported again, or reloaded)
    if handled:
        return False
    shell.set_custom_exc((ConfigError,), show_config_error)
    return True
