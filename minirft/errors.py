"""The one exception type a user sees.

Library code raises :class:`MinirftError` with a message that names the file, line or key at
fault and what was expected. The CLI turns it into ``Error: <message>`` and exit code 1 — never a
traceback.
"""

from __future__ import annotations


class MinirftError(Exception):
    """A problem the user can act on (bad recipe, bad data line, missing model package...)."""
