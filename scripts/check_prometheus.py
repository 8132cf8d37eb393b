#!/usr/bin/env python3
"""Evaluates every PromQL expression of deploy/prometheus/alerts.yaml and of the Grafana
dashboard deploy/grafana/retentiond.json on a real Prometheus that scrapes a real daemon.

Run by scripts/check-prometheus, which starts the daemon and Prometheus:

    check_prometheus.py wait   --prometheus URL --job retentiond --timeout 60
    check_prometheus.py check  --prometheus URL --job retentiond --alerts FILE --dashboard FILE

`check` requires, for every expression (alert `expr`, dashboard target `expr`, Grafana
variables substituted):

  1. Prometheus evaluates it (/api/v1/query) without error;
  2. every series selector in it (`metric{matchers}`) matches at least one series now;
  3. it returns at least one series (none of them all-NaN). An expression whose top level is
     a filter against a number (`x > 0`, `time() - y > 2 * 86400`, per operand of
     `or`/`and`/`unless`) legitimately returns nothing on a healthy daemon: for those the
     filter is stripped and the rest (`x`, `time() - y`) must return at least one series.
     Dashboard queries without such a filter must return something as they are.

It also requires that Prometheus loaded the alert file with every rule's health `ok` (no
evaluation error such as a many-to-many match), and that the dashboard's variable queries
(`label_values(...)`) offer the job the alerts select. Prints a table, exits 1 on a problem.
Standard library only, plus PyYAML for the alerts.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Grafana built-ins: values for a Prometheus that has only a minute of data (a range over
# all of it is the same as over the default 24 h), and the dashboard's own variables.
GRAFANA_BUILTINS = {"__range": "1h", "__rate_interval": "1m", "__interval": "15s",
                    "__range_s": "3600", "__interval_ms": "15000"}
KEYWORDS_LABEL_LIST = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS_OTHER = {"bool", "offset", "and", "or", "unless", "inf", "nan", "atan2", "start", "end"}
SET_OPS = ("or", "and", "unless")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
NUMERIC = re.compile(r"^[\s0-9.eE+\-*/%^()]+$")


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Prometheus HTTP API


def api(base: str, path: str, params: dict | None = None, timeout: float = 10) -> dict:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:  # 400/422: bad query; the body says why
        try:
            body = json.load(e)
        except Exception:
            raise Failed(f"{url}: HTTP {e.code}")
    if body.get("status") != "success":
        raise Failed(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query(base: str, expr: str) -> list[dict]:
    data = api(base, "/api/v1/query", {"query": expr})
    if data["resultType"] == "scalar":  # [t, "v"]
        return [{"metric": {}, "value": data["result"]}]
    if data["resultType"] == "string":
        raise Failed("returns a string")
    return data["result"]


# ---------------------------------------------------------------------------------------
# A small PromQL scanner: enough to find selectors and top-level operators.


TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?(?:ms|[smhdwy])?(?:[0-9]+(?:ms|[smhdwy]))*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,@(){}\[\]])
""", re.X)


def tokens(expr: str) -> list[tuple[str, str, int, int]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise Failed(f"cannot scan {expr[pos:pos + 20]!r}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def selectors(expr: str) -> list[str]:
    """The vector selectors of expr (`name{matchers}`, `name`, `{matchers}`), as text."""
    toks = tokens(expr)
    found, i, depth_brace, depth_bracket = [], 0, 0, 0
    while i < len(toks):
        kind, text, start, end = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in KEYWORDS_LABEL_LIST and nxt == "(":
            # skip the label list
            j = i + 1
            while toks[j][1] != ")":
                j += 1
            i = j + 1
            continue
        if kind == "ident" and depth_brace == 0 and depth_bracket == 0:
            # a function or an aggregation (`sum(`, `sum by (..) (`), or a keyword
            if nxt == "(" or text.lower() in KEYWORDS_OTHER or (nxt or "").lower() in KEYWORDS_LABEL_LIST:
                i += 1
                continue
            sel_end = end
            if nxt == "{":
                j = i + 1
                while toks[j][1] != "}":
                    j += 1
                sel_end = toks[j][3]
                i = j
            found.append(expr[start:sel_end])
            i += 1
            continue
        if text == "{" and depth_brace == 0 and depth_bracket == 0:
            # a selector without a name
            j = i
            while toks[j][1] != "}":
                j += 1
            found.append(expr[start:toks[j][3]])
            i = j + 1
            continue
        if text == "[":
            depth_bracket += 1
        elif text == "]":
            depth_bracket -= 1
        i += 1
    return list(dict.fromkeys(found))


def split_top(expr: str, ops: tuple[str, ...]) -> list[tuple[str, str]]:
    """Splits expr at the operators `ops` outside any brackets: [(operand, op-before), ...].
    Comparisons followed by `bool` are arithmetic, not filters, and are not split."""
    toks = tokens(expr)
    parts, depth, start, before = [], 0, 0, ""
    for i, (kind, text, s, e) in enumerate(toks):
        if text in "([{":
            depth += 1
        elif text in ")]}":
            depth -= 1
        elif depth == 0 and text.lower() in ops and (kind == "op" or kind == "ident"):
            if i + 1 < len(toks) and toks[i + 1][1] == "bool":
                continue
            # a set operator's modifiers (`or on (x)`) belong to the right operand: harmless
            parts.append((expr[start:s].strip(), before))
            start, before = e, text
    parts.append((expr[start:].strip(), before))
    return parts


def unfiltered(expr: str) -> tuple[list[str], bool]:
    """The operands that must return data on a healthy daemon: expr split at top-level
    set operators, each with a top-level comparison against a number removed. Returns
    (operands, whether a filter was removed)."""
    out, stripped = [], False
    for operand, _ in split_top(expr, SET_OPS):
        # `on (..)`/`ignoring (..)`/`group_x (..)` of the set operator: drop them
        operand = re.sub(r"^(on|ignoring)\s*\([^)]*\)\s*", "", operand)
        if not selectors(operand):
            continue  # `vector(0)`: a default, nothing to find
        parts = split_top(operand, COMPARISONS)
        while len(parts) > 1 and NUMERIC.match(parts[-1][0]):
            parts.pop()
            stripped = True
        if len(parts) > 1 and NUMERIC.match(parts[0][0]):
            parts = parts[1:]
            stripped = True
        out.append(" ".join((op + " " if k else "") + p for k, (p, op) in enumerate(parts)).strip())
    return out, stripped


# ---------------------------------------------------------------------------------------


def load_alerts(path: str) -> dict[str, str]:
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = {}
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record")
            out[f"alert {name}"] = str(r["expr"]).strip()
    if not out:
        raise Failed(f"{path}: no rules")
    return out


def panels_of(d: dict) -> list[dict]:
    out = []
    for p in d.get("panels") or []:
        out.append(p)
        out.extend(p.get("panels") or [])
    return out


def substitute(expr: str, values: dict[str, str], where: str) -> str:
    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise Failed(f"{where}: no value for Grafana variable ${name}")
        return values[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


def load_dashboard(path: str, job: str) -> tuple[dict[str, str], dict[str, str]]:
    with open(path) as f:
        d = json.load(f)
    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list") or []}
    values = dict(GRAFANA_BUILTINS)
    var_queries = {}
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            var_queries[name] = q.get("query") if isinstance(q, dict) else q
            # what the selected value renders as in a query: the job the alerts select,
            # every instance ("All" = the allValue regex)
            values[name] = job if name == "job" else (v.get("allValue") or ".+")
        elif v.get("type") in ("custom", "constant", "textbox"):
            values[name] = str((v.get("current") or {}).get("value") or v.get("query") or "")
    exprs = {}
    for p in panels_of(d):
        for t in p.get("targets") or []:
            if t.get("expr"):
                where = f"panel {p.get('id')} {t.get('refId')} {p.get('title')!r}"
                exprs[where] = substitute(t["expr"], values, where)
    if not exprs:
        raise Failed(f"{path}: no panel queries")
    var_queries = {k: substitute(q, values, f"variable {k}") for k, q in var_queries.items() if q}
    return exprs, var_queries


def describe(result: list[dict]) -> str:
    vals = []
    for s in result:
        v = s.get("value", [0, "NaN"])[1]
        vals.append(float(v))
    finite = [v for v in vals if not math.isnan(v)]
    if not finite:
        return "all NaN"
    lo, hi = min(finite), max(finite)
    fmt = lambda x: f"{x:.6g}"
    return fmt(lo) if lo == hi else f"{fmt(lo)}..{fmt(hi)}"


def cmd_wait(args) -> int:
    """Waits until Prometheus is ready, scrapes the job's target (up == 1, at least
    --scrapes samples) and has seen a run finish between two scrapes, and has evaluated
    every alert rule once."""
    deadline = time.monotonic() + args.timeout
    last = "not started"
    sel = f'job="{args.job}"'
    checks = [
        ("target up", f"up{{{sel}}} == 1"),
        (f"{args.scrapes} scrapes", f"count_over_time(up{{{sel}}}[5m]) >= {args.scrapes}"),
        ("a run finished while scraped", f"increase(retentiond_runs_total{{{sel}}}[5m]) > 0"),
    ] + [(f"`{q}`", q) for q in args.also]
    while time.monotonic() < deadline:
        try:
            pending = [what for what, q in checks if not query(args.prometheus, q)]
            groups = api(args.prometheus, "/api/v1/rules").get("groups") or []
            rules = [r for g in groups for r in g.get("rules") or []]
            if not rules or any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules):
                pending.append("alert rules evaluated")
            if not pending:
                return 0
            last = ", ".join(pending)
        except (Failed, OSError) as e:
            last = str(e)
        time.sleep(0.5)
    print(f"timed out after {args.timeout}s waiting for Prometheus: {last}", file=sys.stderr)
    return 1


def cmd_check(args) -> int:
    base = args.prometheus
    problems: list[str] = []
    rows: list[tuple[str, str, str, str, str]] = []  # where, expr, as-is, underlying, values

    # Prometheus loaded the alert file, and every rule evaluates.
    groups = api(base, "/api/v1/rules").get("groups") or []
    loaded = {r.get("name"): r for g in groups for r in g.get("rules") or []}
    alerts = load_alerts(args.alerts)
    for where in alerts:
        name = where.split(" ", 1)[1]
        r = loaded.get(name)
        if r is None:
            problems.append(f"{where}: not loaded by Prometheus (rule_files)")
        elif r.get("health") != "ok" or r.get("lastError"):
            problems.append(f"{where}: Prometheus evaluates it with health {r.get('health')!r}: {r.get('lastError')}")

    exprs, var_queries = load_dashboard(args.dashboard, args.job)

    for where, expr in list(alerts.items()) + list(exprs.items()):
        one_line = " ".join(expr.split())
        try:
            result = query(base, expr)
        except Failed as e:
            problems.append(f"{where}: does not evaluate: {e}\n    {one_line}")
            rows.append((where, one_line, "ERROR", "-", str(e)[:40]))
            continue
        missing = []
        for sel in selectors(expr):
            try:
                if not query(base, f"count({sel})"):
                    missing.append(sel)
            except Failed as e:
                missing.append(f"{sel} ({e})")
        if missing:
            problems.append(f"{where}: no series for {', '.join(missing)}\n    {one_line}")
        operands, stripped = unfiltered(expr)
        under = []
        if stripped:
            for op in operands:
                try:
                    r = query(base, op)
                except Failed as e:
                    problems.append(f"{where}: `{op}` does not evaluate: {e}")
                    r = []
                under.append(len(r))
                if not r:
                    problems.append(f"{where}: `{op}` (the expression without its filter) returns nothing"
                                    f"\n    {one_line}")
                elif describe(r) == "all NaN":
                    problems.append(f"{where}: `{op}` returns only NaN\n    {one_line}")
            values = describe(query(base, operands[0])) if operands and under and under[0] else "-"
        else:
            if not result:
                problems.append(f"{where}: returns nothing\n    {one_line}")
            elif describe(result) == "all NaN":
                problems.append(f"{where}: returns only NaN\n    {one_line}")
            values = describe(result) if result else "-"
        rows.append((where, one_line, str(len(result)),
                     "/".join(map(str, under)) if stripped else "", values))

    # The dashboard's variable queries (Grafana's label_values(), as the labels API).
    for name, q in var_queries.items():
        m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*", q)
        if not m:
            problems.append(f"variable {name}: cannot evaluate {q!r} here")
            continue
        match, label = (m.group(1) or "").strip(), m.group(2)
        params = {"match[]": [match]} if match else None
        got = api(base, f"/api/v1/label/{label}/values", params)
        want_ok = (args.job in got) if name == "job" else bool(got)
        rows.append((f"variable ${name}", q, str(len(got)), "", ",".join(got)[:40]))
        if not want_ok:
            problems.append(f"variable {name}: {q} offers {got}"
                            + (f", not the job {args.job!r} the alerts select" if name == "job" else ""))

    w1 = max(len(r[0]) for r in rows)
    width = 200
    print(f"{'expression':<{w1}}  {'series':>6}  {'unfiltered':>10}  {'values':<14}  query")
    for where, expr, n, under, values in rows:
        q = expr if len(expr) <= width else expr[:width - 3] + "..."
        print(f"{where:<{w1}}  {n:>6}  {under:>10}  {values:<14}  {q}")
    print(f"({len(alerts)} alert expressions, {len(exprs)} dashboard queries, {len(var_queries)} variable "
          f"queries; `unfiltered`: series of the expression with its top-level filter against a number removed)")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    return 0


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"},
                        retries={"max_attempts": 5, "mode": "standard"}))


def cmd_s3(args) -> int:
    """`s3 create BUCKET` (empty, with a few objects under --objects PREFIX...), or
    `s3 delete BUCKET...` (every version too; missing buckets are fine), or
    `s3 delete-stale PREFIX`: buckets PREFIX<pid>-* of processes that are gone."""
    import os
    from botocore.exceptions import ClientError
    s3 = s3_client(args.endpoint)

    def delete(bucket: str) -> None:
        try:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                        for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
                if objs:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
            for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for u in page.get("Uploads") or []:
                    s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            s3.delete_bucket(Bucket=bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "404"):
                raise

    if args.action == "create":
        bucket = args.names[0]
        delete(bucket)
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": args.region})
        for prefix in args.objects:
            for n in range(args.count):
                s3.put_object(Bucket=bucket, Key=f"{prefix}{n:03d}.png", Body=b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif args.action == "delete":
        for b in args.names:
            delete(b)
    elif args.action == "delete-stale":
        prefix = args.names[0]
        for b in s3.list_buckets().get("Buckets") or []:
            m = re.fullmatch(re.escape(prefix) + r"(\d+)-.*", b["Name"])
            if m:
                try:
                    os.kill(int(m.group(1)), 0)
                    continue  # that run is still going
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
                delete(b["Name"])
                print(f"deleted the bucket {b['Name']} of an earlier run", file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("s3")
    s.add_argument("action", choices=["create", "delete", "delete-stale"])
    s.add_argument("names", nargs="+")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--region", default="eu-central-1")
    s.add_argument("--objects", nargs="*", default=[], help="key prefixes to put --count objects under")
    s.add_argument("--count", type=int, default=10)
    w = sub.add_parser("wait")
    w.add_argument("--prometheus", required=True)
    w.add_argument("--job", default="retentiond")
    w.add_argument("--scrapes", type=int, default=5)
    w.add_argument("--timeout", type=float, default=60)
    w.add_argument("--also", action="append", default=[], metavar="EXPR",
                   help="and until this query returns something")
    c = sub.add_parser("check")
    c.add_argument("--prometheus", required=True)
    c.add_argument("--job", default="retentiond")
    c.add_argument("--alerts", required=True)
    c.add_argument("--dashboard", required=True)
    args = ap.parse_args()
    try:
        return {"wait": cmd_wait, "check": cmd_check, "s3": cmd_s3}[args.cmd](args)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
