"""A test handler that writes the environment its worker sees to the JSON file ENV_DUMP (once per row)."""

from __future__ import annotations

import json
import os
from typing import Any


def handle(row: dict[str, Any], context: Any) -> None:
    with open(os.environ["ENV_DUMP"], "w") as dump:
        json.dump(dict(os.environ), dump)
