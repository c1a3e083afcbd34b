"""An app for ``conveyor endpoints register tests/push/cli_app.py:app`` (never opens its database)."""

from __future__ import annotations

from tests.conftest import Tally
from tests.push.apps import define

import conveyor

app = conveyor.Conveyor("push-cli", database="sqlite:////nonexistent-dir/never.db")
define(app, Tally())
