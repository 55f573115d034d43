"""What a pass decided about each thing it looked at, and the pass's totals.

Both backends (hub servers and users, Docker containers and Swarm services) report one
`Outcome` per thing they saw; `PassResult` adds them up into the summary line, the status file
and the metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

# What happened to one thing in a pass:
#   active      not idle (or not old) enough: nothing to do
#   culled      stopped / removed / deleted by this pass (a 202 that completed counts too)
#   stopping    the stop was accepted (202) and had not completed when the pass ended
#   would-cull  chosen for culling in a dry run; nothing changed
#   kept-busy   chosen, but its kernels or terminals are working (or were, within the timeout)
#   kept-active chosen, but it became active during the pass (seen when re-read before stopping)
#   skipped     not considered: pending, not ready, exempt, or not ours to touch
#   failed      chosen, but stopping it failed (the next pass tries again)
Result = Literal[
    "active", "culled", "stopping", "would-cull", "kept-busy", "kept-active", "skipped", "failed"
]
RESULTS: tuple[str, ...] = (
    "active", "culled", "stopping", "would-cull", "kept-busy", "kept-active", "skipped", "failed",
)  # fmt: skip
# Chosen as idle by the policy (whatever happened next).
IDLE_RESULTS = frozenset({"culled", "stopping", "would-cull", "kept-busy", "kept-active", "failed"})
Kind = Literal["server", "user", "container", "service"]


@dataclass(frozen=True)
class Outcome:
    """`target` names the thing as an admin would ("ada", "ada/gpu", "jupyter-ada");
    `reason` says why in a few words ("idle 2:10:00 > timeout 1:00:00")."""

    kind: Kind
    target: str
    result: Result
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "result": self.result,
                "reason": self.reason}  # fmt: skip


@dataclass
class PassResult:
    """Every outcome of one pass, plus the errors that cut (part of) it short."""

    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome

    @property
    def ok(self) -> bool:
        return not self.errors and not any(o.result == "failed" for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        """seen, idle, busy_kept, culled, failed, skipped (and the rest by result)."""
        by_result = Counter(o.result for o in self.outcomes)
        counts = {
            "seen": len(self.outcomes),
            "idle": sum(by_result[r] for r in IDLE_RESULTS),
            "busy_kept": by_result["kept-busy"],
            "culled": by_result["culled"],
            "failed": by_result["failed"],
            "skipped": by_result["skipped"],
        }
        for result in ("stopping", "would-cull", "kept-active"):
            counts[result.replace("-", "_")] = by_result[result]
        return counts

    def counts_by_kind(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter] = {}
        for outcome in self.outcomes:
            table.setdefault(outcome.kind, Counter())[outcome.result] += 1
        return {kind: dict(counter) for kind, counter in table.items()}
