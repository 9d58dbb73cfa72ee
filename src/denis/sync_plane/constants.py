"""Every Redis key prefix the sync plane writes, named once."""

RATE_LIMIT_PREFIX = "denis:rl"
BUDGET_PREFIX = "denis:budget"
BUDGET_KEY_TTL_S = 2 * 24 * 3600
