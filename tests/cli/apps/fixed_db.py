"""An app that names its own database, so ``--database`` cannot redirect it."""

from __future__ import annotations

import conveyor

app = conveyor.Conveyor("fixed", database="sqlite:///fixed-elsewhere.db")
