# Shared helpers of the deployment hooks (sourced, not run). Pure functions of their inputs
# and of function_app.py, so tests can call them offline.
#
# The function names and the container the blob trigger watches are read from function_app.py
# (BLOB_FUNCTION, BLOB_TRIGGER_PATH and DELETED_FUNCTION are plain literals there for this
# reason): Event Grid must deliver to exactly the functions the worker indexes (the host
# answers 202 and drops the event when the name in the webhook URL matches no function),
# and a second copy would drift.

CRISK_ROOT="${CRISK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

_function_app_literal() {
  # _function_app_literal NAME: the string literal assigned to NAME at the top of function_app.py
  local value
  value=$(sed -n "s/^$1 = \"\([^\"]*\)\".*/\1/p" "$CRISK_ROOT/function_app.py" | head -n 1)
  if [ -z "$value" ]; then
    echo "error: $1 = \"...\" not found in $CRISK_ROOT/function_app.py" >&2
    return 1
  fi
  printf '%s\n' "$value"
}

blob_function_name() { _function_app_literal BLOB_FUNCTION; }

deleted_function_name() { _function_app_literal DELETED_FUNCTION; }

blob_container_name() {
  local path
  path=$(_function_app_literal BLOB_TRIGGER_PATH) || return 1
  printf '%s\n' "${path%%/*}"
}

valid_prefix() {
  # The prefix rule the templates are written for: 3-10 lowercase letters and digits,
  # starting with a letter (main.bicep would lower-case or drop other characters).
  printf '%s' "$1" | grep -Eq '^[a-z][a-z0-9]{2,9}$'
}

first_of_this_month_utc() { date -u +%Y-%m-01; }

valid_budget_start() {
  # yyyy-MM-01: Cost Management requires the first of a month.
  printf '%s' "$1" | grep -Eq '^[0-9]{4}-(0[1-9]|1[0-2])-01$'
}

valid_ip_ranges() {
  # Comma-separated public IPv4 addresses or CIDR ranges of /0-/30 (storage IP rules take
  # neither /31 nor /32: a single address is written without a prefix length).
  local item
  local IFS=','
  for item in $1; do
    item=$(printf '%s' "$item" | tr -d ' ')
    [ -z "$item" ] && continue
    printf '%s' "$item" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}(/([0-9]|[12][0-9]|30))?$' || return 1
  done
  return 0
}
