-- When the newest applied report about a run or stage happened (the sender's time, never in
-- the future), so reports that arrive out of order cannot undo newer ones.
ALTER TABLE runs ADD COLUMN reported_at timestamptz;
ALTER TABLE stage_runs ADD COLUMN reported_at timestamptz;
