"""``import conveyor`` stays light: the server stack and the drivers load only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_conveyor_loads_no_server_stack_nor_driver() -> None:
    code = (
        "import sys, conveyor\n"
        "app = conveyor.Conveyor('t', database='sqlite:///:memory:')\n"
        "heavy = ['fastapi', 'starlette', 'uvicorn', 'pydantic', 'httpx', 'psycopg', 'opentelemetry']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
