"""Things a secure program must not run or show: a pickle that runs a command when loaded, a password shown."""

from __future__ import annotations

import os
from urllib.parse import quote

# Every test password holds this; were any part of one shown, its neighbourhood would be too.
MARK = "Zq7SECRET"


class Planted:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def leaks(text: str, pw: str) -> bool:
    """Whether `text` shows password `pw`, raw or %-encoded, or any password's MARK."""
    return MARK in text or pw in text or quote(pw, safe="") in text
