"""Run one vendor fake in its own process (so benchmarks do not share a GIL with it).

    python -m tests.fakes.vendors.serve salesforce --records 100000 --page-size 2000

Prints one JSON line ``{"provider", "url", "config", "credentials", "expected": <count>}`` on
stdout once the server listens, then serves until stdin closes or SIGTERM arrives.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from tests.fakes.vendors.catalog import CASES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=sorted(CASES))
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=None)
    args = parser.parse_args(argv)
    case = CASES[args.provider]
    fake = case.start(records=args.records, page_size=args.page_size)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "provider": case.provider,
                "stream": case.stream,
                "url": fake.url,
                "config": fake.connector_config(),
                "credentials": fake.connector_credentials(),
                "expected": len(case.expected(fake)),
            }
        ),
        flush=True,
    )

    def wait_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
