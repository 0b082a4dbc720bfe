-- 0003_drop_history_by_pod: lease_history loses its index by pod. No code reads it (the
-- daemon and subleasectl ask the history by address); it served "which addresses did
-- pod ns/name have" at the sqlite3 prompt, which is now a scan of the history, as the
-- query by address text already was. Every allocation writes three history rows, and
-- this index put each in a leaf of its own (pod names do not arrive in order): at 64
-- concurrent clients it cost ~20% of the daemon's CPU per allocation, mostly in WAL
-- pages written at each commit (BENCHMARKS.md section 3, NOTES-tp.md).
DROP INDEX lease_history_by_pod;
