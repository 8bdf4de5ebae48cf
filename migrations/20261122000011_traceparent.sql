-- The W3C trace context a run was triggered in (`00-<trace id>-<span id>-<flags>`), handed
-- to Prefect with the flow run (label `__OTEL_TRACEPARENT`) so its spans and the flow's
-- callbacks join the trigger's trace.
ALTER TABLE runs ADD COLUMN traceparent text;
