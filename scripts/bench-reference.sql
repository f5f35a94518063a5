-- Reference database for PostgreSQL benchmarks (about 1.7 GB with `pgbench -i -s 50` beside it).
-- Text with real entropy, jsonb, timestamps and an index: compresses about 4:1, unlike pgbench's
-- own tables (about 50:1), so compression and I/O are measured honestly.
-- Usage: pgbench -i -s 50 DB && psql DB -f scripts/bench-reference.sql (the bench scripts do this)
CREATE TABLE docs AS
SELECT g AS id,
       md5(random()::text) || ' ' || md5(random()::text) || ' lorem ipsum dolor sit amet ' || md5(g::text) AS body,
       jsonb_build_object('k', g % 1000, 'tag', md5((g % 5000)::text)) AS meta,
       now() - random() * interval '365 days' AS ts,
       (random() * 1e6)::int AS n
FROM generate_series(1, 4000000) AS g;
ALTER TABLE docs ADD PRIMARY KEY (id);
CREATE INDEX docs_ts ON docs (ts);
ANALYZE docs;
