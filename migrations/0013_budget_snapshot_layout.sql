-- Budget snapshots get a layout of their own, numbered: `service_budgets.state` was the serde form
-- of the domain's service state, so changing that type would have made every row unreadable. The
-- write side now reads and writes layout 1, which holds the same fields (the ones SQL reads by
-- name, `fallback_service_id`, `name` and `currency`, stay where they are) plus `version`; a row
-- of another layout, or of none, is reported as undecodable rather than read as an empty state.

update service_budgets set state = state || '{"version": 1}'::jsonb where not state ? 'version';
