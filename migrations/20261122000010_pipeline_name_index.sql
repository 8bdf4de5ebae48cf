-- Pipelines listed by name (NAME_ASC) walk this index instead of sorting every pipeline
-- after joining its latest run (258 ms at 10,000 pipelines and 1,000,000 runs; 0.5 ms).
CREATE INDEX pipelines_lower_name_idx ON pipelines (lower(name), id);
