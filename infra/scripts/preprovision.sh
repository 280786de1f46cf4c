#!/usr/bin/env bash
# azd preprovision hook: check and complete the environment before anything is created.
# - ALERT_EMAIL must be set (budget, cost guard and service alerts go there).
# - BUDGET_START_DATE is set once, to the first of the current month, and kept: a budget's
#   start date can never be changed, so later deployments must send the same value.
# - OPERATOR_PRINCIPAL_ID defaults to the signed-in user (roles to upload and read results).
# - With private networking (VNET_ENABLED not "false") storage answers only the operators'
#   IP ranges; OPERATOR_IP_RANGES defaults to this machine's public address so that the
#   postdeploy hook can upload the model bundle.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [ -z "${ALERT_EMAIL:-}" ]; then
  echo "error: set the alert address first: azd env set ALERT_EMAIL you@lender.example" >&2
  exit 1
fi

prefix=$(sed -n "s/^param prefix = '\(.*\)'$/\1/p" "$CRISK_ROOT/infra/main.bicepparam")
if ! valid_prefix "$prefix"; then
  echo "error: prefix '$prefix' in infra/main.bicepparam must be 3-10 lowercase letters and digits, starting with a letter" >&2
  exit 1
fi

if [ -z "${BUDGET_START_DATE:-}" ]; then
  BUDGET_START_DATE=$(first_of_this_month_utc)
  azd env set BUDGET_START_DATE "$BUDGET_START_DATE"
  echo "budget start date set to $BUDGET_START_DATE (kept for every later deployment)"
elif ! valid_budget_start "$BUDGET_START_DATE"; then
  echo "error: BUDGET_START_DATE=$BUDGET_START_DATE is not the first of a month (yyyy-MM-01)" >&2
  exit 1
fi

if [ -z "${OPERATOR_PRINCIPAL_ID:-}" ]; then
  if id=$(az ad signed-in-user show --query id -o tsv 2>/dev/null) && [ -n "$id" ]; then
    azd env set OPERATOR_PRINCIPAL_ID "$id"
    echo "operator roles go to the signed-in user ($id)"
  fi
fi

if [ "${VNET_ENABLED:-true}" != "false" ]; then
  if [ -z "${OPERATOR_IP_RANGES:-}" ]; then
    # The same public-IP lookup Microsoft's Functions azd samples use for their firewall rules.
    ip=$(curl -fsS --max-time 10 https://api.ipify.org || true)
    if ! valid_ip_ranges "$ip" || [ -z "$ip" ]; then
      echo "error: could not find this machine's public IP. Set the operators' addresses:" >&2
      echo "  azd env set OPERATOR_IP_RANGES 203.0.113.7,198.51.100.0/24   (or VNET_ENABLED false)" >&2
      exit 1
    fi
    azd env set OPERATOR_IP_RANGES "$ip"
    echo "storage will accept this machine's address $ip (OPERATOR_IP_RANGES)"
  elif ! valid_ip_ranges "$OPERATOR_IP_RANGES"; then
    echo "error: OPERATOR_IP_RANGES must be public IPv4 addresses or CIDRs up to /30, comma-separated" >&2
    exit 1
  fi
fi
