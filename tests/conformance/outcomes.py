"""Per-test outcomes of pytest JUnit reports (written with
`-o junit_family=xunit1`, which records each test's file), compared.

    outcomes.py summary REPORT.xml
    outcomes.py diff DIRECT.xml PROXIED.xml [--known FILE] [--ids OUT]

A test is named by its pytest node id; its outcome is passed, failed, error
or skipped. `diff` prints each test whose outcome differs (or that ran in
only one report). Tests listed in the known-differences file (lines
`node-id  reason`, `#` comments) are printed as known and do not count; the
others are written to OUT (one node id per line, for a rerun) and make the
exit status 1.
"""
import sys
import xml.etree.ElementTree as ET


def node_id(case):
    name = case.get("name", "")
    classname = case.get("classname", "")
    path = case.get("file")
    if not path:
        return f"{classname}::{name}"
    module = path[: -len(".py")].replace("/", ".") if path.endswith(".py") else path
    inner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
    return "::".join(p for p in (path, inner, name) if p)


def outcomes(path):
    result = {}
    for case in ET.parse(path).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                break
        key = node_id(case)
        # pytest reports a failing test and its failing teardown as two
        # cases; the worse outcome stands.
        if result.get(key, "passed") == "passed":
            result[key] = outcome
    return result


def summary(path):
    counts = {}
    for outcome in outcomes(path).values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts)) or "no tests"


def known(path):
    entries = {}
    if path:
        for line in open(path, encoding="utf-8"):
            line = line.split("#", 1)[0].strip()
            if line:
                test, _, reason = line.partition(" ")
                entries[test] = reason.strip()
    return entries


def option(argv, name):
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main(argv):
    if len(argv) == 2 and argv[0] == "summary":
        print(summary(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "diff":
        allowed = known(option(argv, "--known"))
        base, other = outcomes(argv[1]), outcomes(argv[2])
        unexpected = []
        for key in sorted(set(base) | set(other)):
            a, b = base.get(key, "absent"), other.get(key, "absent")
            if a == b:
                continue
            if key in allowed:
                print(f"  known:   {key}: {a} directly, {b} through pgveil ({allowed[key]})")
            else:
                unexpected.append(key)
                print(f"  DIFFERS: {key}: {a} directly, {b} through pgveil")
        ids = option(argv, "--ids")
        if ids:
            with open(ids, "w", encoding="utf-8") as out:
                out.writelines(k + "\n" for k in unexpected)
        return 1 if unexpected else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
