-- 0002_checks_without_in_lists: the CHECKs on leases.state and lease_history.event say
-- the same as in 0001, written `x = 'a' OR x = 'b' OR x = 'c'` instead of `x IN ('a',
-- 'b', 'c')`. SQLite evaluates an IN over three or more constants through an ephemeral
-- b-tree that it builds and drops for every row written: each allocation writes five
-- such rows, about 8% of the daemon's time (BENCHMARKS.md section 3).
-- SQLite cannot alter a CHECK, so both tables are rebuilt (every row kept, ids
-- included) and their indexes, triggers and views are recreated exactly as 0001 made
-- them. The time this takes grows with the history (one pass over both tables, once).

DROP VIEW leases_view;
DROP VIEW subnet_usage;
DROP VIEW history_view;

CREATE TABLE leases_new (
  id             INTEGER PRIMARY KEY,
  subnet_id      INTEGER NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
  family         INTEGER NOT NULL CHECK (family IN (4, 6)),
  -- Big-endian bytes (IpAddr::Bytes()): memcmp order is numeric order within a family.
  address        BLOB    NOT NULL CHECK (length(address) = CASE family WHEN 4 THEN 4 ELSE 16 END),
  address_text   TEXT    NOT NULL,
  state          TEXT    NOT NULL CHECK (state = 'pending' OR state = 'committed' OR state = 'released'),
  owner          TEXT    NOT NULL,                 -- AttachmentKey.owner: pod:<ns>/<name> or container:<id>
  ifname         TEXT    NOT NULL,
  pod_namespace  TEXT    NOT NULL DEFAULT '',
  pod_name       TEXT    NOT NULL DEFAULT '',
  pod_uid        TEXT    NOT NULL DEFAULT '',
  container_id   TEXT    NOT NULL DEFAULT '',
  provider       TEXT    NOT NULL DEFAULT '',
  sticky         INTEGER NOT NULL DEFAULT 0 CHECK (sticky IN (0, 1)),
  mac            TEXT    NOT NULL DEFAULT '',
  created_ms     INTEGER NOT NULL,
  committed_ms   INTEGER,
  released_ms    INTEGER,
  updated_ms     INTEGER NOT NULL,
  CHECK (state <> 'committed' OR committed_ms IS NOT NULL),
  CHECK ((state = 'released') = (released_ms IS NOT NULL))
);
INSERT INTO leases_new SELECT * FROM leases;

CREATE TABLE lease_history_new (
  id             INTEGER PRIMARY KEY,
  at_ms          INTEGER NOT NULL,
  event          TEXT    NOT NULL CHECK (event = 'allocated' OR event = 'committed' OR event = 'released'),
  lease_id       INTEGER NOT NULL,                 -- not a foreign key: history outlives leases
  subnet         TEXT    NOT NULL,                 -- the name, copied: history outlives subnets
  family         INTEGER NOT NULL,
  address        BLOB    NOT NULL,
  address_text   TEXT    NOT NULL,
  owner          TEXT    NOT NULL,
  pod_namespace  TEXT    NOT NULL,
  pod_name       TEXT    NOT NULL,
  pod_uid        TEXT    NOT NULL,
  container_id   TEXT    NOT NULL,
  ifname         TEXT    NOT NULL
);
INSERT INTO lease_history_new SELECT * FROM lease_history;

-- Drops their indexes and triggers too.
DROP TABLE leases;
DROP TABLE lease_history;
ALTER TABLE leases_new RENAME TO leases;
ALTER TABLE lease_history_new RENAME TO lease_history;

-- The row lock: at most one live lease per address of a subnet.
CREATE UNIQUE INDEX leases_live_address ON leases (subnet_id, address) WHERE state <> 'released';
-- At most one live lease per attachment and family. Owner first, so "every lease of
-- pod ns/name" is an index range too; same uniqueness as (subnet_id, owner, ifname, family).
CREATE UNIQUE INDEX leases_live_attachment ON leases (owner, ifname, subnet_id, family) WHERE state <> 'released';
-- CNI DEL and GC name the container, not the pod.
CREATE INDEX leases_live_container ON leases (container_id) WHERE state <> 'released';

-- "Who had X", newest first: one index range, already in time order.
CREATE INDEX lease_history_by_address ON lease_history (address, at_ms);
-- "Which addresses did pod ns/name have".
CREATE INDEX lease_history_by_pod ON lease_history (pod_namespace, pod_name, at_ms);

-- The lease state machine: pending -> committed -> released, pending -> released.
CREATE TRIGGER leases_insert_live BEFORE INSERT ON leases
WHEN NEW.state = 'released'
BEGIN
  SELECT RAISE(ABORT, 'a lease is inserted pending or committed, never released');
END;

CREATE TRIGGER leases_state_forward BEFORE UPDATE OF state ON leases
WHEN OLD.state = 'released' OR (OLD.state = 'committed' AND NEW.state = 'pending')
BEGIN
  SELECT RAISE(ABORT, 'lease state only moves pending -> committed -> released');
END;

CREATE TRIGGER leases_identity_fixed BEFORE UPDATE OF subnet_id, family, address, owner, ifname ON leases
BEGIN
  SELECT RAISE(ABORT, 'a lease''s subnet, address and attachment never change; release it and insert a new one');
END;

-- A live lease is released, never deleted, so history always sees its end.
CREATE TRIGGER leases_delete_released_only BEFORE DELETE ON leases
WHEN OLD.state <> 'released'
BEGIN
  SELECT RAISE(ABORT, 'a live lease cannot be deleted; release it first');
END;

CREATE TRIGGER leases_history_insert AFTER INSERT ON leases
BEGIN
  INSERT INTO lease_history (at_ms, event, lease_id, subnet, family, address, address_text, owner,
                             pod_namespace, pod_name, pod_uid, container_id, ifname)
  SELECT NEW.created_ms, 'allocated', NEW.id, s.name, NEW.family, NEW.address, NEW.address_text,
         NEW.owner, NEW.pod_namespace, NEW.pod_name, NEW.pod_uid, NEW.container_id, NEW.ifname
  FROM subnets s WHERE s.id = NEW.subnet_id;
  -- A lease inserted already committed (rebuilt from the API server) records both steps.
  INSERT INTO lease_history (at_ms, event, lease_id, subnet, family, address, address_text, owner,
                             pod_namespace, pod_name, pod_uid, container_id, ifname)
  SELECT NEW.committed_ms, 'committed', NEW.id, s.name, NEW.family, NEW.address, NEW.address_text,
         NEW.owner, NEW.pod_namespace, NEW.pod_name, NEW.pod_uid, NEW.container_id, NEW.ifname
  FROM subnets s WHERE s.id = NEW.subnet_id AND NEW.state = 'committed';
END;

CREATE TRIGGER leases_history_state AFTER UPDATE OF state ON leases
WHEN NEW.state <> OLD.state
BEGIN
  INSERT INTO lease_history (at_ms, event, lease_id, subnet, family, address, address_text, owner,
                             pod_namespace, pod_name, pod_uid, container_id, ifname)
  SELECT CASE NEW.state WHEN 'committed' THEN NEW.committed_ms ELSE NEW.released_ms END,
         NEW.state, NEW.id, s.name, NEW.family, NEW.address, NEW.address_text,
         NEW.owner, NEW.pod_namespace, NEW.pod_name, NEW.pod_uid, NEW.container_id, NEW.ifname
  FROM subnets s WHERE s.id = NEW.subnet_id;
END;

-- History is a record: rows are added, and old ones may be pruned, but never rewritten.
CREATE TRIGGER lease_history_no_update BEFORE UPDATE ON lease_history
BEGIN
  SELECT RAISE(ABORT, 'lease_history is append-only');
END;

-- Views for a person at the sqlite3 prompt. Times are UTC.
CREATE VIEW leases_view AS
SELECT s.name                                                   AS subnet,
       l.address_text                                           AS address,
       CASE l.family WHEN 4 THEN 'IPv4' ELSE 'IPv6' END         AS family,
       l.state                                                  AS state,
       CASE WHEN l.pod_name <> '' THEN l.pod_namespace || '/' || l.pod_name ELSE '' END AS pod,
       l.pod_namespace                                          AS pod_namespace,
       l.pod_name                                               AS pod_name,
       l.pod_uid                                                AS pod_uid,
       l.container_id                                           AS container,
       l.ifname                                                 AS ifname,
       l.provider                                               AS provider,
       CASE l.sticky WHEN 1 THEN 'yes' ELSE 'no' END            AS sticky,
       l.mac                                                    AS mac,
       strftime('%Y-%m-%d %H:%M:%f', l.created_ms / 1000.0, 'unixepoch')   AS created,
       strftime('%Y-%m-%d %H:%M:%f', l.committed_ms / 1000.0, 'unixepoch') AS committed,
       strftime('%Y-%m-%d %H:%M:%f', l.released_ms / 1000.0, 'unixepoch')  AS released,
       strftime('%Y-%m-%d %H:%M:%f', l.updated_ms / 1000.0, 'unixepoch')   AS updated
FROM leases l JOIN subnets s ON s.id = l.subnet_id;

CREATE VIEW subnet_usage AS
WITH per_family AS (
  SELECT s.id AS subnet_id, s.name AS subnet, 4 AS family, s.usable_v4 AS usable,
         s.usable_v4_text AS usable_exact
  FROM subnets s WHERE s.cidr_v4 IS NOT NULL
  UNION ALL
  SELECT s.id, s.name, 6, s.usable_v6, s.usable_v6_text
  FROM subnets s WHERE s.cidr_v6 IS NOT NULL
), counted AS (
  SELECT p.*, (SELECT count(*) FROM leases l
               WHERE l.subnet_id = p.subnet_id AND l.family = p.family
                 AND l.state <> 'released') AS used
  FROM per_family p
)
SELECT subnet,
       CASE family WHEN 4 THEN 'IPv4' ELSE 'IPv6' END AS family,
       -- Integers while exact (below 2^53), REAL beyond; usable_exact is always exact.
       CASE WHEN usable < 9007199254740992.0 THEN CAST(usable AS INTEGER) ELSE usable END AS usable,
       used,
       CASE WHEN usable < 9007199254740992.0 THEN CAST(usable AS INTEGER) - used
            ELSE usable - used END AS free,
       CASE WHEN usable > 0 THEN round(100.0 * used / usable, 2) ELSE 0.0 END AS percent,
       usable_exact
FROM counted;

CREATE VIEW history_view AS
SELECT strftime('%Y-%m-%d %H:%M:%f', h.at_ms / 1000.0, 'unixepoch') AS at,
       h.event                                                    AS event,
       h.subnet                                                   AS subnet,
       h.address_text                                             AS address,
       CASE WHEN h.pod_name <> '' THEN h.pod_namespace || '/' || h.pod_name ELSE '' END AS pod,
       h.pod_namespace                                            AS pod_namespace,
       h.pod_name                                                 AS pod_name,
       h.pod_uid                                                  AS pod_uid,
       h.container_id                                             AS container,
       h.ifname                                                   AS ifname,
       h.at_ms                                                    AS at_ms,
       h.id                                                       AS id,
       h.address                                                  AS address_blob
FROM lease_history h;
