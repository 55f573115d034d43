"""`metrics_file`: the figures of `hub-backup status` as Prometheus textfile metrics, one series
per chain, rewritten after every command (node_exporter's textfile collector picks them up).

An alert on `hub_backup_problem == 1` tells the admin whatever needs a look: a home not backed
up within max_age, a last attempt that failed, was incomplete or was killed, a failed drill."""

from __future__ import annotations

from datetime import datetime

from hubsidecars.prometheus import MetricsText


def _timestamp(iso_text: str | None) -> float | None:
    return datetime.fromisoformat(iso_text).timestamp() if iso_text else None


def metrics_text(rows: list[dict], now: datetime) -> str:
    """`rows` as `BackupJobs.status()` returns them."""
    metrics = MetricsText("hub_backup")

    def per_chain(name: str, help_text: str, value_of, kind: str = "gauge") -> None:
        samples = []
        for row in rows:
            value = value_of(row)
            if value is not None:
                samples.append(({"user": row["user"], "chain": row["chain"]}, value))
        metrics.add(name, kind, help_text, samples)

    per_chain("last_success_timestamp_seconds", "When the chain's last successful backup began.",
              lambda row: _timestamp(row["last_success"]))  # fmt: skip
    per_chain("last_attempt_timestamp_seconds", "When the chain's last backup attempt began.",
              lambda row: _timestamp(row["last_attempt"]))  # fmt: skip
    per_chain("last_attempt_success", "1 when the chain's last attempt succeeded, else 0.",
              lambda row: None if row["last_attempt"] is None else int(row["last_attempt_ok"]))
    per_chain("last_duration_seconds", "How long the chain's last attempt took.",
              lambda row: row["last_duration_s"])  # fmt: skip
    per_chain("last_bytes", "Bytes written to the target by the chain's last backup.",
              lambda row: row["last_bytes"])  # fmt: skip
    per_chain("newest_full_timestamp_seconds", "When the chain's newest full backup began.",
              lambda row: _timestamp(row["newest_full"]))  # fmt: skip
    per_chain("incrementals", "Incremental backups since the newest full.",
              lambda row: row["incrementals"])  # fmt: skip
    per_chain("full_chains", "Full chains kept at the target (as of the last cleanup).",
              lambda row: row["full_chains"])  # fmt: skip
    per_chain("stale", "1 when the last success is older than max_age (or there is none).",
              lambda row: int(row["stale"]))  # fmt: skip
    per_chain("problem", "1 when the chain needs a look: stale, last attempt failed, incomplete "
              "or killed, or last drill failed (status says which).",
              lambda row: int(row["problem"] is not None))  # fmt: skip
    per_chain("incomplete", "1 when the last attempt's set lacks files that could not be read.",
              lambda row: int(row["incomplete"]))  # fmt: skip
    per_chain("home_present", "1 when the user's home still exists, 0 when only backups remain.",
              lambda row: int(row["home_present"]))  # fmt: skip
    per_chain("last_drill_timestamp_seconds", "When the chain's last restore drill ran.",
              lambda row: _timestamp(row["last_drill"]))  # fmt: skip
    per_chain("last_drill_success", "1 when the last drill restored every sampled file intact.",
              lambda row: None if row["last_drill"] is None else int(bool(row["drill_ok"])))
    metrics.add("chains", "gauge", "Chains known (homes present and homes gone).",
                [("", len(rows))])  # fmt: skip
    metrics.add("metrics_timestamp_seconds", "gauge", "When these figures were written.",
                [("", now.timestamp())])  # fmt: skip
    return metrics.text()
