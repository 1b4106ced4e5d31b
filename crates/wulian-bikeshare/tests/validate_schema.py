#!/usr/bin/env python3
"""Validates a JSON document against a JSON Schema (draft 7), for the feed tests.

Usage: validate_schema.py <schema.json> <document.json>

Prints every error with its JSON path and exits 1 when the document is invalid, 0 when it is
valid, 2 when the files cannot be read or the schema itself is broken.

Formats are checked strictly and the same way everywhere: jsonschema checks `uri` and
`date-time` only when optional packages are installed, so this script brings its own checkers
for `date-time`, `date`, `uri` and `email` rather than skipping them silently. NaN and
Infinity, which Python's json module would accept, are refused: they are not JSON.
"""

import datetime
import json
import re
import sys

try:
    from jsonschema import Draft7Validator, FormatChecker
except ImportError:  # pragma: no cover - reported to the caller
    print("the jsonschema package is missing: pip install jsonschema", file=sys.stderr)
    sys.exit(2)

DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$"
)
DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 3986 characters outside the authority: unreserved, sub-delims, ':', '@', '/', '?', '#'
# and percent-encodings ('[' and ']' only belong in an IP-literal host).
URI_TAIL = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#]|%[0-9A-Fa-f]{2})*$")
AUTHORITY = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2}|\[[0-9A-Fa-f:.]+\])*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

checker = FormatChecker()


@checker.checks("date-time", raises=ValueError)
def is_date_time(value):
    if not isinstance(value, str):
        return True
    m = DATE_TIME.match(value)
    if not m:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    datetime.date(year, month, day)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("time out of range")
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        raise ValueError("offset out of range")
    return True


@checker.checks("date", raises=ValueError)
def is_date(value):
    if not isinstance(value, str):
        return True
    m = DATE.match(value)
    if not m:
        raise ValueError("not a YYYY-MM-DD date")
    datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return True


@checker.checks("uri", raises=ValueError)
def is_uri(value):
    if not isinstance(value, str):
        return True
    m = SCHEME.match(value)
    if not m:
        raise ValueError("no scheme")
    rest = value[m.end():]
    if rest.startswith("//"):
        authority_end = len(rest)
        for sep in "/?#":
            i = rest.find(sep, 2)
            if i != -1:
                authority_end = min(authority_end, i)
        authority, rest = rest[2:authority_end], rest[authority_end:]
        if not AUTHORITY.match(authority):
            raise ValueError("invalid characters in the authority")
    if not URI_TAIL.match(rest):
        raise ValueError("invalid characters (escape them)")
    return True


@checker.checks("email", raises=ValueError)
def is_email(value):
    if isinstance(value, str) and not EMAIL.match(value):
        raise ValueError("not an email address")
    return True


def refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def path_of(error):
    return "/" + "/".join(str(p) for p in error.absolute_path)


def report(error, indent=""):
    print(f"{indent}{path_of(error)}: {error.message}")
    for sub in sorted(error.context or [], key=lambda e: path_of(e)):
        report(sub, indent + "    ")


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            schema = json.load(f)
        with open(argv[2], encoding="utf-8") as f:
            document = json.load(f, parse_constant=refuse_constant)
        Draft7Validator.check_schema(schema)
    except Exception as e:  # noqa: BLE001 - any failure to load is a usage error
        print(f"cannot validate: {e}", file=sys.stderr)
        return 2
    validator = Draft7Validator(schema, format_checker=checker)
    errors = sorted(validator.iter_errors(document), key=path_of)
    for error in errors:
        report(error)
    if errors:
        print(f"{len(errors)} error(s) in {argv[2]} against {argv[1]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
