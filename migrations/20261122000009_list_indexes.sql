-- Indexes behind the run and pipeline filters' orders and criteria, so they stay fast at a
-- million runs: newest runs first (no criterion), most recently ended first, and tags.
CREATE INDEX runs_created_at_idx ON runs (created_at DESC, id DESC);
CREATE INDEX runs_ended_at_idx ON runs (ended_at DESC NULLS LAST, id DESC);
CREATE INDEX pipelines_tags_idx ON pipelines USING gin (tags);
