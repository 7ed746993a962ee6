-- Catalog reads about our own tables (shared/plans.py).

-- name: relations_pages
-- The size in pages of each relation named in %(names)s, its partitions included (the history's
-- events are partitioned by day: the parent has no storage of its own, and pg_partition_tree of
-- a plain table lists nothing). A name with no relation counts 0. pg_relation_size reads the
-- file's length: no scan, and no lock beyond the catalog lookup's.
SELECT r.name,
       (coalesce(pg_relation_size(to_regclass(r.name)), 0)
        + (SELECT coalesce(sum(pg_relation_size(p.relid)), 0)
           FROM pg_partition_tree(to_regclass(r.name)) p
           WHERE p.isleaf))::bigint / current_setting('block_size')::bigint AS pages
FROM unnest(%(names)s::text[]) AS r(name);
