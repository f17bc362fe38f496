"""Third-party noise off on the command line (`crl --verbose ...` keeps it), each at its source:

  * mujoco's MJX prints "Failed to import warp: ..." / "Failed to import mujoco_warp: ..." to
    stdout when `mujoco.mjx` is first imported on machines without NVIDIA Warp (brax imports it
    too): that import is done here with stdout captured, and any other line is passed through;
  * brax warns that its pipelines are no longer maintained (a UserWarning from brax.io.mjcf,
    every time an env builds its System): ignored for that message and module only;
  * orbax logs routine WARNINGs through absl ("WARNING:absl:..."), and when a checkpoint write
    fails (disk full, read-only) ERRORs with tracebacks from each of its threads, which crl
    reports itself in one line (crl.checkpoint.StorageError): absl's logger is set to CRITICAL.

crl's own warnings (e.g. a damaged checkpoint) and errors are untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import sys
import warnings

WARP_NOTICE = re.compile(r"^Failed to import (mujoco_)?warp: ")
BRAX_NOTICE = r"Brax System, piplines and environments are not actively being maintained"


def import_without_warp_notice(module: str) -> None:
    """Import `module` with stdout captured; re-print every line except MJX's Warp notice."""
    if module in sys.modules:
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        importlib.import_module(module)
    for line in captured.getvalue().splitlines(keepends=True):
        if not WARP_NOTICE.match(line):
            sys.stdout.write(line)


def silence_third_party() -> None:
    """Silence the notices listed in the module docstring for the rest of the process."""
    warnings.filterwarnings("ignore", message=BRAX_NOTICE, category=UserWarning, module=r"brax\.")
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    import_without_warp_notice("mujoco.mjx")
