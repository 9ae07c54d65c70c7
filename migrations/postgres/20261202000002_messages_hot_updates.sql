-- An exchange's row is inserted small (the question, status 'streaming') and updated once, at
-- the end, with its answer, several times larger. Half of each page is left free for those
-- updates, and no index covers a column they change, so PostgreSQL makes them HOT updates: no
-- new index entries, and the old versions are pruned within their page without VACUUM. With
-- the status index and full pages, every update left a dead row and an index entry per index
-- behind, and throughput fell as they piled up where autovacuum is off or behind
-- (docs/benchmarks.md, "Long run"). The index served only the sweep of answers left
-- 'streaming' at start, which now reads the table once.
DROP INDEX IF EXISTS messages_streaming_idx;
ALTER TABLE messages SET (fillfactor = 50);
