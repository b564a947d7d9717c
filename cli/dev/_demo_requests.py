"""The change requests the demo files, one per scenario: what a requester would type into the run form, every
risk question answered (none is assumed, issue 30)."""

from __future__ import annotations

CANARY_PLAN = {"stable_version": "v1", "canary_version": "v2", "interval_s": 1, "probe_requests": 20,
               "steps": [{"weight": 10, "bake_s": 3}, {"weight": 50, "bake_s": 3}, {"weight": 100, "bake_s": 3}]}

STANDARD_SHOP = {
    "type": "standard", "title": "Release shop v2 (faster search) as a canary", "service": "shop",
    "requester": "grace", "template": "canary-shop", "description": "New search index; same API.",
    "test_evidence": "staging run #4411 green",
    "risk": {"users_affected": "many", "complexity": "medium", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"},
    "canary": CANARY_PLAN,
}
# The cart's canary starts failing once its 10 % step is decided: its 50 % step bakes long enough for that to land
# inside it on a loaded machine (a failing step rolls back at its second failed measurement, not at the bake's end).
CART_PLAN = {**CANARY_PLAN, "steps": [{"weight": 10, "bake_s": 3}, {"weight": 50, "bake_s": 60},
                                      {"weight": 100, "bake_s": 3}]}
STANDARD_CART = {
    "type": "standard", "title": "Release cart v2 (new pricing engine) as a canary", "service": "cart",
    "requester": "grace", "template": "canary-cart", "test_evidence": "staging run #4412 green",
    "risk": {"users_affected": "many", "complexity": "medium", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"},
    "canary": CART_PLAN,
}
MAJOR = {
    "type": "major", "title": "Move checkout database to PostgreSQL 16", "service": "checkout", "requester": "frank",
    "implementation_plan": "logical replication, cut over in the monthly window",
    "rollback_plan": "point checkout back at the PostgreSQL 13 primary",
    "test_evidence": "full suite green on a replica of the checkout database",
    "uat_signoff": "UAT-88, accepted by the checkout product owner", "category": "adaptive",
    "documentation_link": "https://wiki.example.com/checkout/postgresql-16",
    "risk": {"users_affected": "all", "complexity": "high", "backout_difficulty": "moderate",
             "tested_in_staging": "yes",
             "touches_data": "yes"},
}
STANDARD_PAYMENTS = {
    "type": "standard", "title": "Rotate the payments API signing key", "service": "payments", "requester": "grace",
    "implementation_plan": "publish the new key, switch signing, retire the old key",
    "rollback_plan": "switch signing back to the old key", "test_evidence": "staging rotation rehearsal",
    "category": "preventive",
    "risk": {"users_affected": "few", "complexity": "low", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"},
}
EMERGENCY = {
    "type": "emergency", "title": "Raise checkout connection pool after outage", "service": "checkout",
    "requester": "bob", "incident_id": "INC-2041", "incident_severity": "P1", "category": "corrective",
    "implementation_plan": "set POOL_SIZE=200 and restart", "rollback_plan": "set POOL_SIZE=50",
    # Untested in staging (the outage is live) and every checkout user is affected: the answers say so.
    "risk": {"users_affected": "all", "complexity": "low", "backout_difficulty": "easy", "tested_in_staging": "no",
             "touches_data": "no"},
}
# The web canary bakes its 50 % step long enough for an operator to abort it in the middle (issue 32).
WEB_PLAN = {**CANARY_PLAN, "steps": [{"weight": 10, "bake_s": 3}, {"weight": 50, "bake_s": 120},
                                     {"weight": 100, "bake_s": 3}]}
STANDARD_WEB = {
    "type": "standard", "title": "Release web v2 (new image pipeline) as a canary", "service": "web",
    "requester": "grace", "template": "canary-web", "test_evidence": "staging run #4413 green",
    "risk": {"users_affected": "many", "complexity": "medium", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"},
    "canary": WEB_PLAN,
}
# What a deployment pipeline files over the pipeline API (its requester is the token's automation). On a service of
# its own: an undated change holds the whole window it takes (issue 32), and the demo's weekly maintenance of
# platform runs in the same release window, so a pipeline on payments (which depends on platform) would take the
# window from the maintenance, or wait for the next one behind it.
PIPELINE_REQUEST = {
    "type": "standard", "title": "Deploy search 1.8 from CI", "service": "search",
    "implementation_plan": "the pipeline deploys build 1.8 once the change may start",
    "rollback_plan": "the pipeline redeploys 1.7", "test_evidence": "CI run 4471: unit, integration, staging",
    "risk": {"users_affected": "few", "complexity": "low", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"},
}
