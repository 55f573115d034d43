"""A tiny daemon on hubsidecars.periodic, run as a real process by the tests (on the host and,
copied in, under systemd in a container). Each pass appends `start N T`, then `end N T` or
`aborted N T` to --record (T: time.monotonic(), comparable between processes on one machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler

from hubsidecars.logs import setup_logging
from hubsidecars.notify import Notifier
from hubsidecars.periodic import PassReport, PeriodicRunner


def numbers(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pass-seconds", type=float, default=0.0)
    parser.add_argument("--abortable", action="store_true", help="a stop cuts a pass short")
    parser.add_argument("--fail-passes", type=numbers, default=set(), help="these passes raise")
    parser.add_argument("--not-ok-passes", type=numbers, default=set(), help="report ok=False")
    parser.add_argument("--wedge-after", type=int, default=0, help="pause the scheduler then")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--stop-timeout", type=float, default=8.0)
    parser.add_argument("--record", default="/dev/null")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    setup_logging(level=args.log_level)
    scheduler = BackgroundScheduler(timezone=UTC)
    passes = 0

    def record(event: str, number: int) -> None:
        with open(args.record, "a") as out:
            out.write(f"{event} {number} {time.monotonic():.4f}\n")

    def one_pass(stop) -> PassReport:
        nonlocal passes
        passes += 1
        number = passes
        record("start", number)
        if number in args.fail_passes:
            record("end", number)
            raise RuntimeError("hub answered 503")
        deadline = time.monotonic() + args.pass_seconds
        while time.monotonic() < deadline:
            if args.abortable and stop.is_set():
                record("aborted", number)
                return PassReport(f"pass {number} aborted", ok=False)
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        record("end", number)
        if number == args.wedge_after:
            scheduler.pause()  # a scheduler that runs nothing any more: no passes, no pings
        return PassReport(f"pass {number} ok", ok=number not in args.not_ok_passes,
                          fields={"checked": number})  # fmt: skip

    time.sleep(args.startup_delay)
    runner = PeriodicRunner(one_pass, args.interval, notifier=Notifier.from_environment(),
                            scheduler=scheduler, stop_timeout=args.stop_timeout)  # fmt: skip
    return runner.run_once() if args.once else runner.run_forever()


if __name__ == "__main__":
    sys.exit(main())
