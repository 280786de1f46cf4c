#!/usr/bin/env bash
# Security gate: known-vulnerable dependency pins (pip-audit) and secrets in tracked files.
#
#   bash .ci/audit.sh                 # both
#   bash .ci/audit.sh --secrets-only  # the secret scan alone (no network)
#
# Exit 1 if a pinned dependency has a known vulnerability or a tracked file holds a secret.
# pip-audit needs PyPI's JSON API or OSV. If neither can be reached (an offline CI runner),
# or it answers for none of the packages, that is printed as a WARNING line and the audit
# part passes: an unreachable service is not a finding, but it is never reported as clean.
# AUDIT_ROOT (default: this repository) selects the git work tree to scan.
set -uo pipefail
root="${AUDIT_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root" || exit 2
status=0

if [ "${1:-}" != "--secrets-only" ]; then
  echo "== dependency audit: pip-audit -r requirements.txt"
  report=$(mktemp)
  errors=$(mktemp)
  timeout 900 pip-audit -r requirements.txt --progress-spinner off -f json -o "$report" \
    2>"$errors"
  audit_rc=$?
  python - "$report" "$errors" "$audit_rc" <<'PY'
"""Read pip-audit's JSON report and say plainly what was and was not audited."""
import json
import sys

report_path, errors_path, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors = open(errors_path, encoding="utf-8", errors="replace").read()
try:
    with open(report_path, encoding="utf-8") as f:
        deps = json.load(f)["dependencies"]
except (OSError, ValueError, KeyError):
    deps = None
if deps is None:
    unreachable = any(
        s in errors
        for s in ("ConnectionError", "NameResolution", "Max retries", "timed out", "SSLError")
    )
    last = (errors.strip().splitlines() or ["(no output)"])[-1][:300]
    if unreachable or rc == 124:
        print("WARNING: pip-audit could not reach a vulnerability service (PyPI JSON API / OSV);")
        print(f"WARNING: dependencies were NOT audited. Last error: {last}")
        sys.exit(0)
    print(f"ERROR: pip-audit failed (exit {rc}): {last}")
    sys.exit(1)
audited = [d for d in deps if "skip_reason" not in d]
skipped = [d for d in deps if "skip_reason" in d]
vulnerable = [d for d in audited if d.get("vulns")]
for d in vulnerable:
    for v in d["vulns"]:
        fixes = ", ".join(v.get("fix_versions") or []) or "no fixed release"
        aliases = ", ".join(v.get("aliases") or [])
        print(f"VULNERABLE: {d['name']}=={d['version']} {v['id']} ({aliases}) -> fixed in {fixes}")
print(f"pip-audit: {len(audited)} of {len(deps)} packages audited, {len(vulnerable)} vulnerable")
if skipped:
    print(f"not audited: {len(skipped)} package(s), e.g. {skipped[0]['skip_reason']}")
    print("not audited: " + ", ".join(d["name"] for d in skipped))
if vulnerable:
    sys.exit(1)
if not audited:
    print("WARNING: the vulnerability service answered for none of the packages (is PyPI's")
    print("WARNING: JSON API reachable from here?); dependencies were NOT audited.")
sys.exit(0)
PY
  [ $? -eq 0 ] || status=1
  rm -f "$report" "$errors"
fi

echo "== secret scan of tracked files (git ls-files)"
git ls-files -z | python -c '
"""Private keys, storage account keys and SAS signatures in tracked text files."""
import re
import sys

# Azurite'"'"'s well-known development key: public and identical in every install. Allowed
# only where it is documented, so nobody copies it into a real connection string elsewhere.
# The key is read from its one home rather than written here, so this file stays clean.
DEV_KEY_HOME = "blobflow/store.py"
DEV_KEY = "".join(re.findall(r"^\s+\"([A-Za-z0-9+/=]+)\"$", open(DEV_KEY_HOME).read(), re.M))
CHECKS = [
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AccountKey in a connection string", re.compile(r"AccountKey=([A-Za-z0-9+/]{20,}={0,2})")),
    # 64 random bytes in base64; the "-" guard skips npm integrity hashes ("sha512-...==").
    ("storage account key", re.compile(r"(?<![A-Za-z0-9+/-])([A-Za-z0-9+/]{86}==)")),
    ("SAS signature", re.compile(r"[?&;]sig=([A-Za-z0-9%+/]{20,}={0,2})")),
    ("SharedAccessSignature", re.compile(r"SharedAccessSignature=([^;\"\x27\s]{20,})")),
]
found = []
for path in sys.stdin.buffer.read().decode().split("\0"):
    if not path:
        continue
    try:
        data = open(path, "rb").read()
    except OSError:
        continue  # deleted in the work tree but still tracked
    if b"\0" in data[:8192]:
        continue  # binary
    text = data.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, pattern in CHECKS:
            for m in pattern.finditer(line):
                value = m.group(m.lastindex or 0)
                if DEV_KEY in value or value in DEV_KEY:
                    if path == DEV_KEY_HOME:
                        continue
                    what = "Azurite key outside " + DEV_KEY_HOME + " (use UseDevelopmentStorage=true)"
                found.append(f"{path}:{lineno}: {what}")
for f in sorted(set(found)):
    print(f"SECRET: {f}")
print(f"secret scan: {len(set(found))} finding(s)")
sys.exit(1 if found else 0)
'
[ $? -eq 0 ] || status=1

exit $status
