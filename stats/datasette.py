"""Datasette metadata for activity.sqlite: a title and a description for every table, view
and column, generated from the descriptions in stats.schema (the same ones the database holds
in its schema_docs table).

The shipped file, stats/datasette-metadata.json, is this module's output for a database
named "activity" (Datasette names a database after its file: activity.sqlite, as
`hub-stats serve` hands it out). An analyst runs

    datasette activity.sqlite --metadata datasette-metadata.json

For a file under another name, write metadata for that name:
`python -m stats.datasette --database NAME > metadata.json`.
Regenerate the shipped file after changing the schema's descriptions:
`python -m stats.datasette > stats/datasette-metadata.json`.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import Any

from stats.schema import TABLE_DOCS, VIEW_DOCS

DATABASE = "activity"
SHIPPED = "datasette-metadata.json"

TITLE = "JupyterHub activity (hub-stats)"
DESCRIPTION = (
    "Who used the hub, when, and how much: recorded by hub-stats from polls of the JupyterHub "
    "API. Rows are added only when something changed (a user came or went, a server started "
    "or stopped, a last_activity moved); the views answer the usual questions. Times are UTC."
)
# Tables that are not in TABLE_DOCS because they describe the rest.
EXTRA_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "schema_docs": ("What every table, view and column holds (the text of these pages).", {
        "object": "table or view name",
        "kind": "table or view",
        "column": "column name ('' for the table or view itself)",
        "description": "what it holds",
    }),
}  # fmt: skip
ROW_ID = "row number (other tables refer to it)"
WITHOUT_ROW_ID = {"compmodels_activity", "schema_docs"}
# Newest first where that is what an analyst looks for.
SORT_DESC = {"polls": "id", "activity_events": "id", "container_samples": "id",
             "sessions": "id"}  # fmt: skip


def title(name: str) -> str:
    """daily_active_users -> Daily active users."""
    words = name.replace("_", " ")
    return words[:1].upper() + words[1:]


def metadata(database: str = DATABASE) -> dict[str, Any]:
    """Datasette's metadata document for `database`."""
    tables: dict[str, Any] = {}
    for name, (about, columns) in {**TABLE_DOCS, **EXTRA_TABLES}.items():
        described = dict(columns) if name in WITHOUT_ROW_ID else {"id": ROW_ID, **columns}
        entry = {"title": title(name), "description": about, "columns": described}
        if name in SORT_DESC:
            entry["sort_desc"] = SORT_DESC[name]
        tables[name] = entry
    for name, (about, columns) in VIEW_DOCS.items():
        tables[name] = {"title": title(name), "description": about, "columns": dict(columns)}
    return {
        "title": TITLE,
        "description": DESCRIPTION,
        "databases": {database: {"title": TITLE, "description": DESCRIPTION, "tables": tables}},
    }


def render(database: str = DATABASE) -> str:
    return json.dumps(metadata(database), indent=2, ensure_ascii=False) + "\n"


def shipped_metadata() -> str:
    """The metadata file installed with the package."""
    return resources.files("stats").joinpath(SHIPPED).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stats.datasette",
        description="Print Datasette metadata (titles, descriptions) for activity.sqlite.",
    )
    parser.add_argument("--database", default=DATABASE,
                        help="the database's name in Datasette: the file name without "
                        ".sqlite (default: %(default)s)")  # fmt: skip
    print(render(parser.parse_args(argv).database), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
