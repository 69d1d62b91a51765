-- Schema and roles of the compose demo; runs once, when the data directory is created.

-- The example app's table.
CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer    text        NOT NULL,
    total_cents integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders (customer, total_cents)
SELECT 'customer-' || (n % 100), (n * 37) % 10000
FROM generate_series(1, 1000) AS n;

-- The sidecar's database probe: pg_monitor lets it see every role's sessions in
-- pg_stat_activity; two connections are all it ever needs.
CREATE ROLE pool_exporter LOGIN PASSWORD 'pool_exporter' CONNECTION LIMIT 2;
GRANT pg_monitor TO pool_exporter;
