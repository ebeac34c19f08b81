//! Numbered schema migrations, applied in order at open and recorded in `schema_migrations`.
//! Never edit a released migration: add the next one.

use rusqlite::{Connection, params};

use super::{Result, StoreError, now_ms, sql};

/// `(version, SQL)`, versions 1, 2, 3... in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
-- Child rows reference the integer `pk`, not the text id, to keep them small.
CREATE TABLE calls (
    pk             INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    direction      TEXT NOT NULL,
    caller         TEXT NOT NULL,
    callee         TEXT NOT NULL,
    caller_key     TEXT NOT NULL,
    callee_key     TEXT NOT NULL,
    agent          TEXT,
    agent_version  TEXT,
    started_at_ms  INTEGER NOT NULL,
    answered_at_ms INTEGER,
    ended_at_ms    INTEGER,
    state          TEXT NOT NULL,
    end_reason     TEXT,
    outcome        TEXT,
    recording      TEXT,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    metadata       TEXT NOT NULL
);
-- Listing is newest first; every filter index ends with started_at_ms (and the implicit pk)
-- so a filtered first page is an index range scan in order.
CREATE INDEX calls_started ON calls (started_at_ms);
CREATE INDEX calls_agent ON calls (agent, started_at_ms);
CREATE INDEX calls_caller ON calls (caller_key, started_at_ms);
CREATE INDEX calls_callee ON calls (callee_key, started_at_ms);
CREATE INDEX calls_state ON calls (state, started_at_ms);

CREATE TABLE events (
    call   INTEGER NOT NULL REFERENCES calls (pk) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (call, seq)
) WITHOUT ROWID;

CREATE TABLE transcripts (
    id     INTEGER PRIMARY KEY,
    call   INTEGER NOT NULL REFERENCES calls (pk) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL,
    role   TEXT NOT NULL,
    text   TEXT NOT NULL,
    UNIQUE (call, seq)
);
CREATE VIRTUAL TABLE transcript_fts USING fts5 (
    text, content = 'transcripts', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER transcripts_fts_insert AFTER INSERT ON transcripts BEGIN
    INSERT INTO transcript_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER transcripts_fts_delete AFTER DELETE ON transcripts BEGIN
    INSERT INTO transcript_fts (transcript_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TABLE usage (
    id                  INTEGER PRIMARY KEY,
    call                INTEGER NOT NULL REFERENCES calls (pk) ON DELETE CASCADE,
    at_ms               INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    input_audio_tokens  INTEGER,
    input_text_tokens   INTEGER,
    output_audio_tokens INTEGER,
    output_text_tokens  INTEGER
);
CREATE INDEX usage_call ON usage (call);
CREATE INDEX usage_at ON usage (at_ms);

CREATE TABLE latencies (
    call        INTEGER NOT NULL REFERENCES calls (pk) ON DELETE CASCADE,
    turn        INTEGER NOT NULL,
    host_in_ms  REAL NOT NULL,
    model_ms    REAL NOT NULL,
    host_out_ms REAL NOT NULL,
    total_ms    REAL NOT NULL,
    PRIMARY KEY (call, turn)
) WITHOUT ROWID;
"#,
    ),
    (
        2,
        r#"
-- Usage as items (see domain::usage): a new brain adds kinds and units, not columns.
-- NUMERIC keeps whole amounts (tokens) as integers and fractional ones (seconds) as reals.
CREATE TABLE usage_items (
    id       INTEGER PRIMARY KEY,
    call     INTEGER NOT NULL REFERENCES calls (pk) ON DELETE CASCADE,
    at_ms    INTEGER NOT NULL,
    provider TEXT NOT NULL,
    stage    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    unit     TEXT NOT NULL,
    amount   NUMERIC NOT NULL
);
CREATE INDEX usage_items_call ON usage_items (call);
CREATE INDEX usage_items_at ON usage_items (at_ms);

-- Every number of a version-1 row becomes an item (totals always, the split where it is not
-- NULL), in the order reported. Those rows came from speech-to-speech models only; their
-- provider is the one the call's `answered` event names.
INSERT INTO usage_items (call, at_ms, provider, stage, kind, unit, amount)
WITH kinds (ord, kind) AS (VALUES
    (1, 'input'), (2, 'input-text'), (3, 'input-audio'),
    (4, 'output'), (5, 'output-text'), (6, 'output-audio')),
items AS (
    SELECT u.id, u.call, u.at_ms, k.ord, k.kind, CASE k.kind
            WHEN 'input' THEN u.input_tokens
            WHEN 'input-text' THEN u.input_text_tokens
            WHEN 'input-audio' THEN u.input_audio_tokens
            WHEN 'output' THEN u.output_tokens
            WHEN 'output-text' THEN u.output_text_tokens
            WHEN 'output-audio' THEN u.output_audio_tokens
        END AS amount
    FROM usage u CROSS JOIN kinds k)
SELECT call, at_ms,
    COALESCE((SELECT json_extract(e.data, '$.model') FROM events e
              WHERE e.call = items.call AND e.kind = 'answered' ORDER BY e.seq LIMIT 1),
             'unknown'),
    'speech-to-speech', kind, 'tokens', amount
FROM items WHERE amount IS NOT NULL ORDER BY id, ord;

DROP TABLE usage;
"#,
    ),
    (
        3,
        r#"
-- The leg a call came or went on ("udp", "tls", "twilio", "openai-sip", ...), for the list and
-- the dashboard; earlier calls take it from their `created` event.
ALTER TABLE calls ADD COLUMN transport TEXT;
UPDATE calls SET transport = (
    SELECT json_extract(e.data, '$.transport') FROM events e
    WHERE e.call = calls.pk AND e.kind = 'created' ORDER BY e.seq LIMIT 1);
"#,
    ),
    (
        4,
        r#"
-- A cascade brain's split of a turn's model time (NULL for speech-to-speech brains).
ALTER TABLE latencies ADD COLUMN stt_ms REAL;
ALTER TABLE latencies ADD COLUMN llm_ms REAL;
ALTER TABLE latencies ADD COLUMN tts_ms REAL;
"#,
    ),
    (
        5,
        r#"
-- The live configuration overlay: changes made through the API over the file's values.
-- kind: route (key = pattern), default-agent (key ''), setting or secret (agent + key).
-- A NULL value removes the file's value.
CREATE TABLE config_overlay (
    kind   TEXT NOT NULL,
    agent  TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT,
    at_ms  INTEGER NOT NULL,
    PRIMARY KEY (kind, agent, key)
) WITHOUT ROWID;

-- Every live change: who (token name or loopback), what, before and after (JSON, secrets
-- masked).
CREATE TABLE config_audit (
    id      INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL
);
"#,
    ),
    (
        6,
        r#"
-- Outbound campaigns: settings are the campaign layer's JSON.
-- state_reason: why the host itself put it in that state (a paused campaign's trunk is gone).
CREATE TABLE campaigns (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    state          TEXT NOT NULL,
    state_reason   TEXT,
    settings       TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- zones: the IANA zones its calling window is checked in, comma-separated.
CREATE TABLE campaign_contacts (
    campaign              TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    idx                   INTEGER NOT NULL,
    number                TEXT NOT NULL,
    name                  TEXT NOT NULL,
    time_zone             TEXT,
    zones                 TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    state                 TEXT NOT NULL,
    next_at_ms            INTEGER NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_day              TEXT,
    attempts_on_last_day  INTEGER NOT NULL DEFAULT 0,
    outcome               TEXT,
    agent_outcome         TEXT,
    PRIMARY KEY (campaign, idx)
) WITHOUT ROWID;
CREATE INDEX campaign_contacts_due ON campaign_contacts (campaign, state, next_at_ms);

CREATE TABLE campaign_attempts (
    campaign       TEXT NOT NULL,
    contact        INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    call_id        TEXT,
    outcome        TEXT,
    agent_outcome  TEXT,
    ended_at_ms    INTEGER,
    PRIMARY KEY (campaign, contact, attempt),
    FOREIGN KEY (campaign, contact) REFERENCES campaign_contacts (campaign, idx)
        ON DELETE CASCADE
) WITHOUT ROWID;

-- The do-not-call list, E.164 numbers.
CREATE TABLE dnc (
    number       TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    added_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    ),
    (
        7,
        r#"
-- Outgoing webhooks' deliveries (see store::webhooks): one row per event and webhook.
-- status: pending, delivered or dead; history: the last attempts as a JSON array.
CREATE TABLE webhook_deliveries (
    id                 INTEGER PRIMARY KEY,
    webhook            TEXT NOT NULL,
    message_id         TEXT NOT NULL,
    kind               TEXT NOT NULL,
    sequence_key       TEXT NOT NULL,
    payload            TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempts           INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    lease_owner        TEXT,
    lease_until_ms     INTEGER,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    history            TEXT NOT NULL,
    UNIQUE (webhook, message_id)
);
-- The head of each webhook's sequence among the pending rows (what a claim looks at).
CREATE INDEX webhook_deliveries_sequence ON webhook_deliveries (webhook, sequence_key, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook, id);
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE status = 'dead';
"#,
    ),
];

/// Bring the schema up to date; refuses a database written by a newer build.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, latest())
}

/// Apply the migrations up to version `target` (tests build old databases with it).
pub fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    )
    .map_err(sql("creating schema_migrations"))?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sql("reading the schema version"))?;
    let known = latest();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for &(version, body) in MIGRATIONS.iter().filter(|m| m.0 > current && m.0 <= target) {
        let tx = conn.transaction().map_err(sql("starting a migration"))?;
        tx.execute_batch(body)
            .map_err(sql("applying a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            params![version, now_ms()],
        )
        .map_err(sql("recording a migration"))?;
        tx.commit().map_err(sql("committing a migration"))?;
        tracing::info!(version, "call store schema migrated");
    }
    Ok(())
}

/// The latest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
