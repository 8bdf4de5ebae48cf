-- Deleting a run checks the rows that refer to it. Without an index on the referring
-- column, each check reads the whole table: deleting 5,000 runs among 1,000,000 (a
-- pipeline's, or `make bench` clearing the runs it triggered) read `runs` 5,000 times,
-- for `retry_of_run_id`, and took minutes.
CREATE INDEX runs_retry_of_run_id_idx ON runs (retry_of_run_id) WHERE retry_of_run_id IS NOT NULL;
CREATE INDEX idempotency_keys_run_id_idx ON idempotency_keys (run_id);
