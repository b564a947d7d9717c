"""A deployment pipeline's "may I deploy?" over changeflow's pipeline API, with nothing but Python's standard
library (for runners without the changeflow CLI; with it, `changeflow submit FILE --token-env VAR --wait` does
the same). docs/pipelines.md shows it in GitHub Actions and GitLab CI.

    CHANGEFLOW_URL=https://changes.example.com CHANGEFLOW_TOKEN=cfa_... \\
        python pipeline_gate.py request.json [--timeout 7200] [--until start]

Files the change in request.json (JSON: the fields of `changeflow submit`'s request file), then waits on its
approval gate (`--until start`: until its window opened and its run began the implementation, when a pipeline that
deploys the change itself deploys; it then reports the outcome, docs/pipelines.md). Exit codes, as `changeflow
wait`'s: 0 deploy; 1 rejected, expired or cancelled; 2 bad input or a refused token; 3 still undecided at
--timeout. Progress goes to stderr; stdout holds the final record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

EXIT = {"proceed": 0, "refused": 1, "pending": 3}


def call(method: str, url: str, token: str, body: dict | None = None, timeout_s: float = 90) -> dict:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("request", help="the change request, a JSON file")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for a decision (exit 3)")
    parser.add_argument("--until", choices=("approval", "start"), default="approval",
                        help="approval: released once approved; start: once its run began the implementation")
    args = parser.parse_args()
    base = os.environ.get("CHANGEFLOW_URL", "").rstrip("/")
    token = os.environ.get("CHANGEFLOW_TOKEN", "")
    if not base or not token:
        print("CHANGEFLOW_URL and CHANGEFLOW_TOKEN must be set (the token from the pipeline's secret store)",
              file=sys.stderr)
        return 2
    with open(args.request) as handle:
        change_request = json.load(handle)
    try:
        record = call("POST", f"{base}/api/v1/changes", token, change_request)
        if args.until != "approval":
            record = call("GET", f"{base}/api/v1/changes/{record['key']}?until={args.until}", token)
        print(f"{record['key']} filed: waiting for {record['waiting_for']}", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        told = record["waiting_for"]
        while record["verdict"] == "pending" and (left := deadline - time.monotonic()) > 0:
            hold_s = max(1, round(min(left, 50)))  # the server answers `pending` after its own limit anyway
            record = call("GET", f"{base}/api/v1/changes/{record['key']}/wait?timeout={hold_s}&until={args.until}",
                          token)
            if record["verdict"] == "pending" and record["waiting_for"] != told:
                told = record["waiting_for"]
                print(f"{record['key']}: waiting for {told}", file=sys.stderr)
    except urllib.error.HTTPError as refused:
        answer = json.loads(refused.read() or b"{}")
        print(f"refused ({refused.code}): {answer.get('error', refused.reason)}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    if record["verdict"] == "refused":
        print(f"{record['key']} was {record['state']}: {record['reason']}", file=sys.stderr)
    elif record["verdict"] == "proceed":
        print(f"{record['key']} {'approved' if args.until == 'approval' else 'started'}: deploy", file=sys.stderr)
    return EXIT[record["verdict"]]


if __name__ == "__main__":
    sys.exit(main())
