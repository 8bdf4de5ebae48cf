-- A running run that has reported nothing (no callback, no Prefect state) for a while is
-- flagged as stuck; the next report clears the flag.
ALTER TABLE runs ADD COLUMN stuck_since timestamptz;
