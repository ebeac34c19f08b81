//! GET /v1/openapi.json: the OpenAPI 3.1 description of this API, written by hand next to the
//! handlers it describes (tests/all/api.rs checks that every route is listed).

use axum::Json;
use serde_json::{Value, json};

use super::validate::{
    CALL_TARGET_FORMS, MAX_AGENT, MAX_BODY, MAX_FROM, MAX_METADATA, MAX_METADATA_PROPERTIES,
    MAX_NUMBER, MAX_TARGET, MAX_TRUNK, TRANSFER_TARGET_FORMS,
};

pub(super) fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub(super) fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

pub(super) fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

pub(super) fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// The schemas of the live configuration endpoints.
fn config_schemas() -> Value {
    let sourced = json!({"type": "object", "required": ["value", "source"], "properties": {
        "value": {"type": "string", "description": "Secrets as ***"},
        "source": {"enum": ["file", "environment", "live"], "description": "Precedence: file < live change; environment-set values are not editable"},
        "variable": {"type": "string", "description": "The environment variable, for source environment"}}});
    let route = json!({"type": "object", "properties": {
        "agent": {"type": "string"}, "source": {"enum": ["file", "environment", "live"]}, "variable": {"type": "string"}}});
    let agent_values = json!({"type": "object", "properties": {
        "settings": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/SourcedValue"}},
        "secrets": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/SourcedValue"}}}});
    let effective = json!({"type": "object", "properties": {
        "routes": {"type": "object", "description": "By canonical pattern (1000, 4930*)", "additionalProperties": {"$ref": "#/components/schemas/SourcedRoute"}},
        "default_agent": {"oneOf": [{"$ref": "#/components/schemas/SourcedValue"}, {"type": "null"}]},
        "agents": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/AgentValues"}},
        "accounts": {"type": "object", "description": "Registration accounts by name", "additionalProperties": {"type": "object", "properties": {
            "value": {"$ref": "#/components/schemas/Account"},
            "source": {"enum": ["file", "environment", "live"]}}}},
        "trunks": {"type": "object", "description": "Trunks by name", "additionalProperties": {"type": "object", "properties": {
            "value": {"$ref": "#/components/schemas/Trunk"},
            "source": {"enum": ["file", "environment", "live"]}}}},
        "webhooks": {"type": "object", "description": "Outgoing webhooks by name", "additionalProperties": {"type": "object", "properties": {
            "value": {"$ref": "#/components/schemas/Webhook"},
            "source": {"enum": ["file", "environment", "live"]}}}},
        "model": {"type": "object", "description": "The [model] keys provider, model, voice and api-key (as ***) that are set", "additionalProperties": {"$ref": "#/components/schemas/SourcedValue"}}}});
    let webhook = json!({"type": "object", "additionalProperties": false,
        "description": "A [[webhooks]] entry, the file's field names; the name comes from the path. The secret is write-only: read back as ***; left out of a PUT or given as ***, the current one is kept",
        "required": ["url", "events"], "properties": {
        "name": {"type": "string", "description": "If given, the path's name"},
        "url": {"type": "string", "description": "http or https; a literal loopback, link-local or metadata address needs allow-local"},
        "events": {"type": "array", "items": {"enum": ["call.started", "call.answered", "call.ended", "call.transferred", "call.outcome", "recording.ready", "campaign.progress"]}},
        "secret": {"type": ["string", "null"], "description": "whsec_<base64>; SWITCHBOARD_WEBHOOK_SECRET_<NAME> overrides it"},
        "allow-local": {"type": "boolean"},
        "timeout-ms": {"type": "integer", "minimum": 1}, "connect-timeout-ms": {"type": "integer", "minimum": 1},
        "max-attempts": {"type": "integer", "minimum": 1}, "retry-ms": {"type": "integer", "minimum": 1},
        "queue-limit": {"type": "integer", "minimum": 1}}});
    let trunk = json!({"type": "object", "additionalProperties": false,
        "description": "A [[sip.trunks]] entry, the file's field names; the name comes from the path. Passwords (password, inbound.digest.password) are write-only: read back as ***; left out of a PUT or given as ***, the current ones are kept",
        "required": ["outbound-proxy"], "properties": {
        "name": {"type": "string", "description": "If given, the path's name"},
        "outbound-proxy": {"type": "string", "description": "ip:port where outbound INVITEs go"},
        "domain": {"type": ["string", "null"]}, "transport": {"enum": ["udp", "tcp", "tls"]},
        "tls-server-name": {"type": ["string", "null"]}, "tls-client-cert": {"type": ["string", "null"]},
        "tls-client-key": {"type": ["string", "null"]}, "srtp": {"enum": ["off", "optional", "required"]},
        "from-user": {"type": ["string", "null"]}, "display-name": {"type": ["string", "null"]},
        "auth-user": {"type": ["string", "null"]}, "password": {"type": ["string", "null"]},
        "inbound-sources": {"type": "array", "items": {"type": "string"}},
        "inbound": {"type": "object", "description": "digest {realm, user, password}, rate-limit-per-source, max-concurrent-calls"},
        "channels": {"type": ["integer", "null"], "minimum": 1, "description": "Calls the trunk carries at once, inbound and outbound together"},
        "default": {"type": "boolean"},
        "allowed-prefixes": {"type": "array", "items": {"type": "string"}}}});
    let document = json!({"type": "object", "additionalProperties": false,
        "description": "The live overlay: values changed live and the paths removed live; secrets and passwords as *** (given back so: keep the current one)",
        "properties": {
        "default-agent": {"type": "string"},
        "removed": {"type": "array", "items": {"type": "string"}, "description": "Paths below /v1/config removed live, e.g. routes/2000, trunks/carrier"},
        "routes": {"type": "object", "additionalProperties": {"type": "string"}},
        "agents": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "settings": {"type": "object", "additionalProperties": {"type": "string"}},
            "secrets": {"type": "object", "additionalProperties": {"type": "string"}}}}},
        "accounts": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Account"}},
        "trunks": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Trunk"}},
        "webhooks": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Webhook"}},
        "model": {"type": "object", "description": "[model] keys: provider, model, voice, api-key", "additionalProperties": {"type": "string"}}}});
    let account = json!({"type": "object", "additionalProperties": false,
        "description": "A [[sip.accounts]] entry, the file's field names; the name comes from the path",
        "required": ["registrar", "aor"], "properties": {
        "name": {"type": "string", "description": "If given, the path's name"},
        "registrar": {"type": "string", "description": "ip:port"},
        "aor": {"type": "string", "description": "Address of record with a user part, e.g. sip:agent@pbx.example.com"},
        "auth-user": {"type": ["string", "null"]},
        "password": {"type": ["string", "null"], "description": "Write-only: read back as ***; left out of a PUT, the current one is kept"},
        "transport": {"enum": ["udp", "tcp", "tls"]},
        "expires": {"type": "integer"}, "backoff-base-secs": {"type": "integer"},
        "backoff-max-secs": {"type": "integer"}, "keepalive-secs": {"type": "integer"},
        "timeout-secs": {"type": "integer"}}});
    let audit = json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "at_ms": {"type": "integer"},
        "who": {"type": "string", "description": "The token's name (tokens[i] for a plain token), or loopback"},
        "action": {"enum": ["set", "delete", "import"]},
        "target": {"type": "string", "description": "routes/{pattern}, default-agent, agents/{name}/settings/{key}, agents/{name}/secrets/{key}, accounts/{name}, trunks/{name}, webhooks/{name}, model/{key}, or live for an import"},
        "before": {"description": "The value before (null when absent, *** for a secret, an account or trunk with its passwords as ***; the whole LiveDocument for an import)"},
        "after": {"description": "The value after (null when absent, *** for a secret, an account or trunk with its passwords as ***; the whole LiveDocument for an import)"}}});
    let applied = json!({"type": "object", "properties": {
        "change": {"$ref": "#/components/schemas/ConfigChange"},
        "etag": {"type": "string", "description": "The new ETag (also in the ETag header)"}}});
    json!({
        "SourcedValue": sourced, "SourcedRoute": route, "AgentValues": agent_values,
        "EffectiveConfig": effective, "ConfigChange": audit, "ConfigApplied": applied,
        "Account": account, "Trunk": trunk, "Webhook": webhook, "LiveDocument": document,
        "AgentBody": {"type": "object", "required": ["agent"], "additionalProperties": false, "properties": {
            "agent": {"type": "string", "description": "A loaded agent"}}},
        "ValueBody": {"type": "object", "required": ["value"], "additionalProperties": false, "properties": {
            "value": {"type": "string", "maxLength": crate::live::MAX_VALUE}}},
    })
}

/// One configuration write: PUT with `body` (a schema name) or DELETE.
fn config_write(summary: &str, id: &str, params: Value, body: Option<&str>) -> Value {
    let mut op = json!({"summary": summary, "operationId": id, "parameters": params,
        "description": "Needs a token with scope write (or, without tokens, [http] allow-loopback-writes) and If-Match: the ETag of GET /v1/config/effective. Applied at once for new calls; running calls keep their agent version.",
        "responses": {
            "200": ok_json("Applied", json!({"$ref": "#/components/schemas/ConfigApplied"})),
            "400": error_response("Refused by the start-up rules, field named: bad_pattern, route_conflict (a number claimed twice), unknown_agent, unknown_key, field_too_large, bad_account, bad_trunk, bad_webhook, bad_model, secret_not_set; or bad JSON. Nothing changed"),
            "401": error_response("Missing or wrong bearer token"),
            "403": error_response("forbidden: the token has scope read, or no tokens and no allow-loopback-writes"),
            "404": error_response("Deleting what is not set"),
            "409": error_response("etag_mismatch (the configuration changed since that ETag) or set_by_environment (the variable named)"),
            "428": error_response("if_match_required"),
            "429": error_response("rate_limited: over [http] config-writes-per-minute for this caller; Retry-After says when to retry")}});
    if let Some(schema) = body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    op
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description})
}

/// The paths of the live configuration endpoints.
fn config_paths() -> Value {
    let pattern = json!([path_param(
        "pattern",
        "Number or prefix pattern ending in * (URL-encode +)"
    )]);
    let account = json!([path_param("name", "The account's name")]);
    let trunk = json!([path_param("name", "The trunk's name")]);
    let webhook = json!([path_param("name", "The webhook's name")]);
    let model_key = json!([path_param("key", "provider, model, voice or api-key")]);
    let format = query(
        "format",
        json!({"enum": ["json", "toml"]}),
        "Default json; toml answers application/toml",
    );
    let export = json!({"summary": "The live overlay as one document (secrets as ***)", "operationId": "exportLiveConfig",
        "parameters": [format],
        "responses": {"200": {"description": "The document; ETag header (of the effective configuration) for an import's If-Match", "headers": {"ETag": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LiveDocument"}},
                        "application/toml": {"schema": {"type": "string"}}}},
            "400": error_response("Bad query"), "401": error_response("Missing or wrong bearer token")}});
    let mut import = config_write(
        "Replace the whole live overlay with a document (as exported): checked as a whole before anything applies, audited as one change (action import, target live)",
        "importLiveConfig",
        json!([]),
        None,
    );
    import["requestBody"] = json!({"required": true, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/LiveDocument"}},
        "application/toml": {"schema": {"type": "string"}}}});
    import["responses"]["400"] = error_response(
        "As one change's refusals (field named), or bad_path (removed names nothing), duplicate_target, secret_not_set (*** where nothing is set), bad_document. Nothing changed",
    );
    import["responses"]["415"] =
        error_response("unsupported_media_type: send application/json or application/toml");
    let agent_key = json!([
        path_param("name", "A loaded agent"),
        path_param("key", "A key the agent's manifest declares")
    ]);
    let effective = json!({"summary": "The effective routes, default agent, agent settings (secrets as ***) and registration accounts (passwords as ***) with each value's source", "operationId": "effectiveConfig",
        "responses": {"200": {"description": "Effective configuration; ETag header for If-Match", "headers": {"ETag": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EffectiveConfig"}}}},
            "401": error_response("Missing or wrong bearer token")}});
    let audit = json!({"summary": "Live configuration changes, newest first", "operationId": "configAudit",
        "parameters": [query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "Default 100")],
        "responses": {"200": ok_json("Changes", json!({"type": "object", "properties": {
            "changes": {"type": "array", "items": {"$ref": "#/components/schemas/ConfigChange"}}}})),
            "400": error_response("Bad query"), "401": error_response("Missing or wrong bearer token")}});
    json!({
        "/v1/config/effective": {"get": effective},
        "/v1/config/audit": {"get": audit},
        "/v1/config/routes/{pattern}": {
            "put": config_write("Route a number or prefix to an agent", "putRoute", pattern.clone(), Some("AgentBody")),
            "delete": config_write("Remove a route", "deleteRoute", pattern, None)},
        "/v1/config/default-agent": {
            "put": config_write("Set the default agent", "putDefaultAgent", json!([]), Some("AgentBody"))},
        "/v1/config/agents/{name}/settings/{key}": {
            "put": config_write("Set an agent setting ([agent.<name>.config])", "putAgentSetting", agent_key.clone(), Some("ValueBody")),
            "delete": config_write("Remove an agent setting", "deleteAgentSetting", agent_key.clone(), None)},
        "/v1/config/agents/{name}/secrets/{key}": {
            "put": config_write("Set an agent secret ([agent.<name>.secrets]); write-only", "putAgentSecret", agent_key.clone(), Some("ValueBody")),
            "delete": config_write("Remove an agent secret", "deleteAgentSecret", agent_key, None)},
        "/v1/config/accounts/{name}": {
            "put": config_write("Add or replace a registration account ([[sip.accounts]]): it registers, or is unregistered and registers again with the new values", "putAccount", account.clone(), Some("Account")),
            "delete": config_write("Remove a registration account: it un-REGISTERs (Expires: 0)", "deleteAccount", account, None)},
        "/v1/config/trunks/{name}": {
            "put": config_write("Add or replace a trunk ([[sip.trunks]]): new calls through it use it at once", "putTrunk", trunk.clone(), Some("Trunk")),
            "delete": config_write("Remove a trunk: new calls through it are refused (unknown_trunk); running ones finish", "deleteTrunk", trunk, None)},
        "/v1/config/webhooks/{name}": {
            "put": config_write("Add or replace an outgoing webhook ([[webhooks]]): events from now on are queued for it", "putWebhook", webhook.clone(), Some("Webhook")),
            "delete": config_write("Remove an outgoing webhook: nothing more is queued for it; its pending deliveries are dead-lettered when they come due", "deleteWebhook", webhook, None)},
        "/v1/config/model/{key}": {
            "put": config_write("Set a [model] key (provider, model, voice; api-key write-only): calls that start from now on connect to the provider it gives; running calls keep theirs", "putModelValue", model_key.clone(), Some("ValueBody")),
            "delete": config_write("Remove a [model] key (the file's value is hidden too; provider left out is offline)", "deleteModelValue", model_key, None)},
        "/v1/config/live": {"get": export, "put": import},
    })
}

/// The schema of a webhook delivery (`api::webhooks::DeliveryView`).
fn webhook_schemas() -> Value {
    json!({
        "WebhookDelivery": {"type": "object", "properties": {
            "id": {"type": "integer", "description": "For POST /v1/webhooks/deliveries/{id}/resend"},
            "webhook": {"type": "string"},
            "webhook_id": {"type": "string", "description": "The webhook-id header: the same on every attempt and resend (receivers dedupe on it)"},
            "type": {"type": "string", "enum": ["call.started", "call.answered", "call.ended", "call.transferred", "call.outcome", "recording.ready", "campaign.progress"]},
            "status": {"type": "string", "enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "last_code": {"type": ["integer", "null"], "description": "The last attempt's HTTP status (null: no answer)"},
            "last_error": {"type": ["string", "null"]},
            "codes": {"type": "array", "items": {"type": ["integer", "null"]}, "description": "Each kept attempt's HTTP status, oldest first"},
            "history": {"type": "array", "items": {"type": "object", "properties": {
                "at_ms": {"type": "integer"}, "code": {"type": "integer"}, "error": {"type": "string"}}}},
            "next_attempt_at_ms": {"type": ["integer", "null"], "description": "When a pending delivery is tried next"},
            "created_at_ms": {"type": "integer"},
            "updated_at_ms": {"type": "integer"},
            "payload": {"type": "object", "description": "The body sent: {type, timestamp, data}"}}},
        "WebhookDeliveries": {"type": "object", "properties": {
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookDelivery"}}}}
    })
}

fn webhook_paths() -> Value {
    let list = ok_json(
        "Newest first",
        json!({"$ref": "#/components/schemas/WebhookDeliveries"}),
    );
    let limit = query(
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        "How many",
    );
    let unauthorized = error_response("Missing or wrong bearer token");
    json!({
        "/v1/webhooks/{name}/deliveries": {"get": {"summary": "A webhook's recent deliveries: status, attempts, last error, HTTP codes", "operationId": "webhookDeliveries",
            "parameters": [path_param("name", "The webhook's name ([[webhooks]] name)"), limit],
            "responses": {"200": list, "401": unauthorized, "404": error_response("No webhook of that name")}}},
        "/v1/webhooks/dead-letters": {"get": {"summary": "Deliveries of every webhook that ran out of attempts (or got 410 Gone)", "operationId": "webhookDeadLetters",
            "parameters": [limit],
            "responses": {"200": list, "401": unauthorized}}},
        "/v1/webhooks/deliveries/{id}/resend": {"post": {"summary": "Send a delivered or dead delivery again: due now, attempts reset, same webhook-id", "operationId": "resendWebhookDelivery",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "responses": {"200": ok_json("Queued again", json!({"$ref": "#/components/schemas/WebhookDelivery"})),
                "400": error_response("The delivery is still pending"), "401": unauthorized,
                "404": error_response("No delivery with this id")}}}
    })
}

/// The document (also used by the tests).
pub fn spec() -> Value {
    let mut doc = base_spec();
    for more in [
        config_schemas(),
        webhook_schemas(),
        super::campaigns::openapi_schemas(),
    ] {
        if let (Some(schemas), Value::Object(more)) =
            (doc["components"]["schemas"].as_object_mut(), more)
        {
            schemas.extend(more);
        }
    }
    for more in [
        config_paths(),
        webhook_paths(),
        super::campaigns::openapi_paths(),
    ] {
        if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), more) {
            paths.extend(more);
        }
    }
    doc
}

/// Every path but the live configuration's and the campaigns'.
fn base_spec() -> Value {
    let unauthorized = error_response("Missing or wrong bearer token");
    let not_found = error_response("No call with this id");
    let bad = error_response("Malformed JSON or query");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Calls, agents, registrations, usage, live events and metrics. Every path except /health and /ready needs `Authorization: Bearer <token>` when [http] tokens is set. Errors are {\"error\": code, \"detail\": ...}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                    "error": {"type": "string", "description": "Machine-readable code, e.g. bad_json, body_too_large, field_too_large, bad_value, bad_target, unknown_agent, bad_number, unknown_trunk, no_route, bad_caller_id, carrier_refused, call_not_found, call_not_active, unauthorized, not_ready"},
                    "detail": {"description": "Human-readable text, or an object with more fields"},
                    "field": {"type": "string", "description": "The request field at fault (to, via, trunk, from, agent, number, metadata, or body for the whole body), when there is one"}}},
                "PlaceCall": {"type": "object", "required": ["to"], "additionalProperties": false, "maxProperties": 8,
                    "description": format!("Every field is checked before any agent runs: over its maximum, a 400 field_too_large naming the field; a body over {MAX_BODY} bytes, a 413 body_too_large."),
                    "properties": {
                    "to": {"type": "string", "maxLength": MAX_TARGET, "description": format!("Accepted: {CALL_TARGET_FORMS}. Anything else is a 400 bad_target listing these forms.")},
                    "via": {"type": "string", "maxLength": MAX_TRUNK, "description": "Name of a [[sip.trunks]] entry or of a carrier bridge (\"twilio\") to call through (needed for a number or tel: URI unless a trunk is marked default = true). Through a bridge, from must be one of the account's numbers ([bridges.twilio] numbers)"},
                    "trunk": {"type": "string", "maxLength": MAX_TRUNK, "description": "Older name of via (both may be given only when they agree)"},
                    "from": {"type": "string", "maxLength": MAX_FROM, "pattern": "^[A-Za-z0-9\\-_.!~*'()&=+$,;?/%]+$", "description": "Caller id (SIP user part); routes to an agent when agent and number are absent"},
                    "agent": {"type": "string", "maxLength": MAX_AGENT, "description": "Agent to run, by name"},
                    "number": {"type": "string", "maxLength": MAX_NUMBER, "description": "Route as if this number had been dialled"},
                    "metadata": {"maxProperties": MAX_METADATA_PROPERTIES, "description": format!("Any JSON, given to the agent's on-start as call-info.metadata: at most {MAX_METADATA} bytes as compact JSON (strings and objects inside count towards it), and at most {MAX_METADATA_PROPERTIES} properties when an object")},
                    "detect_machine": {"type": "boolean", "default": false, "description": "Run answering-machine detection once answered, beside the call (the greeting never waits for it): the verdict (human, machine or unknown) and a voicemail beep are recorded as machine-detection and voicemail-beep events and reach the agent as on-event machine-detected and voicemail-beep"}}},
                "Transfer": {"type": "object", "required": ["to"], "additionalProperties": false, "maxProperties": 1, "properties": {
                    "to": {"type": "string", "maxLength": MAX_TARGET, "description": format!("Accepted: {TRANSFER_TARGET_FORMS}. Anything else is a 400 bad_target listing these forms.")}}},
                "CallRecord": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "direction": {"enum": ["inbound", "outbound"]},
                    "caller": {"type": "string"}, "callee": {"type": "string"},
                    "agent": {"type": ["string", "null"]}, "agent_version": {"type": ["string", "null"]},
                    "transport": {"type": ["string", "null"], "description": "The leg: udp, tcp, tls, twilio, telnyx, vonage, openai-sip"},
                    "node": {"type": ["string", "null"], "description": "The node ([node] id) that runs or ran the call; null for calls recorded before nodes were"},
                    "started_at_ms": {"type": "integer"}, "answered_at_ms": {"type": ["integer", "null"]},
                    "ended_at_ms": {"type": ["integer", "null"]},
                    "state": {"enum": ["active", "ended", "ended_abnormally"]},
                    "end_reason": {"type": ["string", "null"]}, "outcome": {"type": ["string", "null"]},
                    "recording": {"type": ["string", "null"], "description": "Server-side path"},
                    "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
                    "metadata": {}}},
                "CallItem": {"allOf": [{"$ref": "#/components/schemas/CallRecord"}, {"type": "object", "properties": {
                    "live": {"type": "boolean", "description": "The call task runs in this process now"}}}]},
                "CallEvent": {"type": "object", "required": ["call_id", "seq", "at_ms", "type"], "properties": {
                    "call_id": {"type": "string"}, "seq": {"type": "integer"}, "at_ms": {"type": "integer"},
                    "type": {"enum": ["created", "state", "rejected", "progress", "not-answered", "answered", "actions", "agent-fault", "action-refused", "dtmf", "transcript", "tool-call", "tool-result", "speech-started", "speech-stopped", "barge-in", "usage", "turn-latency", "transfer", "handoff", "model-error", "greeting-reworded", "hold", "session-timer", "recording", "media-stats", "ended"]}},
                    "additionalProperties": true,
                    "description": "Live event (SSE). The fields besides call_id/seq/at_ms/type depend on type, e.g. state: {state: ringing|starting|active|transferring|ending|ended}; usage: {input_tokens, output_tokens, items: [UsageItem]} for one report."},
                "UsageItem": {"type": "object", "required": ["provider", "stage", "kind", "unit", "amount"], "properties": {
                    "provider": {"type": "string", "description": "e.g. openai, gemini"},
                    "stage": {"type": "string", "description": "speech-to-speech, or a cascade's stt, llm, tts"},
                    "kind": {"type": "string", "description": "What was counted. input and output are the provider's totals; the other kinds are parts of them (input-text, input-audio, input-cached, input-cached-text, input-cached-audio, output-text, output-audio) or counted apart (thoughts, tool-use-prompt). Kinds overlap: add amounts per kind, never across kinds."},
                    "unit": {"type": "string", "description": "tokens, seconds (stt) or characters (tts)"},
                    "amount": {"type": "number"}}},
                "StageLatency": {"type": "object", "description": "A cascade brain's split of model_ms: end of speech to final transcript (stt_ms), request to the first token (llm_ms), first sentence to the first audio (tts_ms)", "properties": {
                    "stt_ms": {"type": "number"}, "llm_ms": {"type": "number"}, "tts_ms": {"type": "number"}}},
                "StoredEvent": {"type": "object", "properties": {
                    "call_id": {"type": "string"}, "seq": {"type": "integer"}, "at_ms": {"type": "integer"},
                    "kind": {"type": "string", "description": "The event type"}, "data": {"type": "object"}}},
                "CallDetail": {"type": "object", "properties": {
                    "call": {"$ref": "#/components/schemas/CallRecord"},
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                    "transcript": {"type": "array", "items": {"type": "object", "properties": {
                        "call_id": {"type": "string"}, "seq": {"type": "integer"}, "at_ms": {"type": "integer"},
                        "role": {"enum": ["caller", "agent"]}, "text": {"type": "string"}}}},
                    "usage": {"type": "array", "items": {"$ref": "#/components/schemas/UsageItem"},
                        "description": "Everything the call's brain reported using, summed per (provider, stage, kind, unit), in the order first reported"},
                    "latencies": {"type": "array", "items": {"type": "object", "properties": {
                        "call_id": {"type": "string"}, "turn": {"type": "integer"},
                        "host_in_ms": {"type": "number"}, "model_ms": {"type": "number"},
                        "host_out_ms": {"type": "number"}, "total_ms": {"type": "number"},
                        "stages": {"$ref": "#/components/schemas/StageLatency"}}}},
                    "conversation": {"type": "object", "description": "Counted from the events: the caller's barge-ins, reprompts of a silent caller, fillers said while tools ran", "properties": {
                        "interruptions": {"type": "integer"}, "reprompts": {"type": "integer"}, "fillers": {"type": "integer"}}},
                    "live": {"type": "boolean"},
                    "recording_url": {"type": ["string", "null"], "description": "/v1/calls/{id}/recording when the call was recorded"}}},
                "Accepted": {"type": "object", "properties": {"id": {"type": "string"}, "command": {"enum": ["hangup", "transfer"]}}},
                "Agent": {"type": "object", "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"}, "description": {"type": "string"},
                    "hash": {"type": "string"}, "numbers": {"type": "array", "items": {"type": "string"}},
                    "loaded_at_ms": {"type": "integer"}, "wasm_path": {"type": "string"}, "manifest_path": {"type": "string"}}},
                "Route": {"type": "object", "properties": {
                    "pattern": {"type": "string"}, "agent": {"type": "string"},
                    "source": {"type": "string", "description": "config, or the manifest file"},
                    "version": {"type": ["string", "null"], "description": "Live version, null when the agent is not loaded"},
                    "hash": {"type": ["string", "null"]}}},
                "AgentEvent": {"type": "object", "properties": {
                    "at_ms": {"type": "integer"}, "agent": {"type": "string"},
                    "kind": {"enum": ["loaded", "failed", "removed"]},
                    "version": {"type": "string"}, "hash": {"type": "string"}, "load_ms": {"type": "integer"},
                    "error": {"type": "string"}}},
                "Agents": {"type": "object", "properties": {
                    "agents": {"type": "array", "items": {"$ref": "#/components/schemas/Agent"}},
                    "routes": {"type": "array", "items": {"$ref": "#/components/schemas/Route"}},
                    "default_agent": {"type": ["string", "null"]},
                    "default_version": {"type": ["string", "null"]},
                    "history": {"type": "array", "items": {"$ref": "#/components/schemas/AgentEvent"}}}},
                "Registration": {"type": "object", "properties": {
                    "account": {"type": "string"}, "aor": {"type": "string"},
                    "state": {"enum": ["registering", "registered", "failing", "unregistered"]},
                    "last_error": {"type": ["string", "null"]}, "failures": {"type": "integer"},
                    "expires_secs": {"type": ["integer", "null"]}, "next_attempt_secs": {"type": ["integer", "null"]},
                    "successes": {"type": "integer"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/calls": {
                "post": {"summary": "Place an outbound call", "operationId": "placeCall",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlaceCall"}}}},
                    "responses": {
                        "201": ok_json("Call placed (INVITE sent); follow it by id or on /v1/events", json!({"type": "object", "properties": {"id": {"type": "string"}}})),
                        "400": error_response("Malformed JSON (bad_json), a field over its maximum (field_too_large), a bad value (bad_value), a target not in an accepted form (bad_target; field names it), or a caller id not of the bridge's account (bad_caller_id)"),
                        "401": unauthorized.clone(),
                        "409": error_response("The agent's on-start declined the call (agent_declined)"),
                        "413": error_response("body_too_large: the body is over the limit"),
                        "415": error_response("Content-Type is not application/json"),
                        "422": error_response("Unknown or missing fields (bad_json), unknown_agent, bad_number, no_route or unknown_trunk"),
                        "502": error_response("carrier_refused: the bridge's carrier did not place the call (its answer quoted)"),
                        "503": error_response("agent_failed (on-start trapped or timed out), no_media_port, no_free_channel (every channel of the trunk carries a call), or signalling_failed")}},
                "get": {"summary": "List calls, newest first", "operationId": "listCalls",
                    "parameters": [
                        query("active", json!({"type": "boolean"}), "true: only active calls (including live ones not yet stored); false: only finished"),
                        query("agent", json!({"type": "string"}), "Exact agent name"),
                        query("number", json!({"type": "string"}), "Caller or callee number (separators and URI syntax ignored)"),
                        query("from_ms", json!({"type": "integer"}), "Started at or after (ms since epoch)"),
                        query("to_ms", json!({"type": "integer"}), "Started before (ms since epoch)"),
                        query("text", json!({"type": "string"}), "Words that must occur in the transcript"),
                        query("limit", json!({"type": "integer", "minimum": 0, "maximum": 1000}), "Page size (default 50)"),
                        query("cursor", json!({"type": "string"}), "next_cursor of the previous page")],
                    "responses": {
                        "200": ok_json("A page of calls", json!({"type": "object", "properties": {
                            "calls": {"type": "array", "items": {"$ref": "#/components/schemas/CallItem"}},
                            "next_cursor": {"type": ["string", "null"]}}})),
                        "400": bad.clone(), "401": unauthorized.clone()}}
            },
            "/v1/calls/{id}": {"get": {"summary": "A call with events, transcript, usage and turn latency", "operationId": "getCall",
                "parameters": [id_param()],
                "responses": {"200": ok_json("The call", json!({"$ref": "#/components/schemas/CallDetail"})), "401": unauthorized.clone(), "404": not_found.clone()}}},
            "/v1/calls/{id}/recording": {"get": {"summary": "The call's recording", "operationId": "getRecording",
                "parameters": [id_param()],
                "responses": {"200": {"description": "WAV file", "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
                    "401": unauthorized.clone(), "404": error_response("No such call, or it has no recording")}}},
            "/v1/calls/{id}/hangup": {"post": {"summary": "Hang up a live call (cancels it while ringing)", "operationId": "hangupCall",
                "parameters": [id_param()],
                "responses": {"202": ok_json("Hang-up requested", json!({"$ref": "#/components/schemas/Accepted"})),
                    "401": unauthorized.clone(), "404": not_found.clone(), "409": error_response("The call has ended")}}},
            "/v1/calls/{id}/transfer": {"post": {"summary": "Blind-transfer a live call (REFER; the outcome arrives as transfer events), or hand it to another agent (agent:NAME; handoff events)", "operationId": "transferCall",
                "parameters": [id_param()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Transfer"}}}},
                "responses": {"202": ok_json("Transfer requested", json!({"$ref": "#/components/schemas/Accepted"})),
                    "400": error_response("Malformed JSON, field_too_large, or bad_target (not an accepted form, or agent:NAME not loaded or not granted)"),
                    "401": unauthorized.clone(), "404": not_found.clone(),
                    "409": error_response("The call has ended"), "413": error_response("body_too_large")}}},
            "/v1/agents": {"get": {"summary": "Live agent versions, routes and reload history", "operationId": "listAgents",
                "responses": {"200": ok_json("Agents", json!({"$ref": "#/components/schemas/Agents"})), "401": unauthorized.clone()}}},
            "/v1/agents/reload": {"post": {"summary": "Reload every agent from the agents folder", "operationId": "reloadAgents",
                "responses": {"200": ok_json("Agents after the reload, plus the files refused", json!({"allOf": [{"$ref": "#/components/schemas/Agents"}, {"type": "object", "properties": {
                    "errors": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}}}]})),
                    "401": unauthorized.clone()}}},
            "/v1/registrations": {"get": {"summary": "Registration state per account", "operationId": "listRegistrations",
                "responses": {"200": ok_json("Registrations", json!({"type": "object", "properties": {"registrations": {"type": "array", "items": {"$ref": "#/components/schemas/Registration"}}}})),
                    "401": unauthorized.clone()}}},
            "/v1/admin/drain": {"post": {"summary": "Drain this node as SIGTERM does: OPTIONS and new INVITEs get 503, /ready says draining, registrations are released, running calls go on (at most [node] drain-max-secs, then a goodbye); then the process exits 0", "operationId": "drain",
                "responses": {"202": ok_json("Draining", json!({"type": "object", "properties": {
                    "draining": {"const": true}, "started": {"type": "boolean", "description": "false when the node was already draining"},
                    "calls": {"type": "integer", "description": "calls still running"}}})),
                    "401": unauthorized.clone()}}},
            "/v1/usage": {"get": {"summary": "Model tokens per UTC day", "operationId": "usage",
                "parameters": [
                    query("from_ms", json!({"type": "integer"}), "Default: to_ms minus 30 days"),
                    query("to_ms", json!({"type": "integer"}), "Exclusive; default: now")],
                "responses": {"200": ok_json("Usage", json!({"type": "object", "properties": {
                    "from_ms": {"type": "integer"}, "to_ms": {"type": "integer"},
                    "days": {"type": "array", "items": {"type": "object", "properties": {
                        "day": {"type": "string", "description": "YYYY-MM-DD (UTC)"},
                        "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}}},
                    "total": {"type": "object", "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}}}})),
                    "400": bad.clone(), "401": unauthorized.clone()}}},
            "/v1/webrtc/tickets": {"post": {"summary": "Mint a call ticket: lets a public page start web calls to one number (POST /webrtc/{number} on the public listener, Authorization: Bearer <ticket>)", "operationId": "mintWebTicket",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["number"], "properties": {
                    "number": {"type": "string"},
                    "ttl-secs": {"type": "integer", "description": "Default 300; at most [webrtc] max-ticket-secs"},
                    "calls": {"type": "integer", "description": "Calls it may start; default 1"},
                    "concurrent": {"type": "integer", "description": "Of them at once; default 1"}}}}}},
                "responses": {"201": ok_json("Ticket", json!({"type": "object", "properties": {
                    "ticket": {"type": "string"}, "number": {"type": "string"}, "expires-at-ms": {"type": "integer"},
                    "calls": {"type": "integer"}, "concurrent": {"type": "integer"}}})),
                    "400": bad.clone(), "401": unauthorized.clone(), "404": {"description": "No agent serves the number"}, "503": {"description": "Web calls are off ([webrtc] not configured)"}}}},
            "/v1/webrtc/{number}": {"post": {"summary": "Start a web call: a WebRTC SDP offer in (audio, data channel 'switchboard', no trickle), the answer out", "operationId": "webCall",
                "parameters": [{"name": "number", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "x-switchboard-metadata", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 4096}, "description": "Handed to the agent as the call's metadata"}],
                "requestBody": {"required": true, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "responses": {"201": {"description": "The SDP answer; X-Switchboard-Call-Id names the call, Location its record",
                        "content": {"application/sdp": {"schema": {"type": "string"}}}},
                    "400": {"description": "Malformed SDP, no audio, no common codec (text)"}, "401": unauthorized.clone(),
                    "404": {"description": "No agent serves the number"}, "429": {"description": "Too many web calls"},
                    "503": {"description": "Web calls are off, or no free port"}}}},
            "/v1/events": {"get": {"summary": "Server-sent events", "operationId": "events",
                "description": "SSE. Event names: each call event's type (data: CallEvent JSON; sent once stored, so GET /v1/calls/{id} shows it), agent-reload (data: AgentEvent), registration (data: Registration), log (data: {at_ms, level, target, line}), config-change (data: ConfigChange), campaign (data: CampaignProgress), lagged (data: {missed}). Keep-alive comments every 15 s.",
                "responses": {"200": {"description": "Event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "401": unauthorized.clone()}}},
            "/v1/config": {"get": {"summary": "The running configuration (file + environment), secrets masked as ***", "operationId": "config",
                "responses": {"200": ok_json("Configuration", json!({"type": "object"})), "401": unauthorized.clone()}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                "responses": {"200": ok_json("OpenAPI 3.1", json!({"type": "object"})), "401": unauthorized.clone()}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                "responses": {"200": {"description": "Text exposition format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": unauthorized}}},
            "/health": {"get": {"summary": "Liveness (no token needed)", "operationId": "health", "security": [],
                "responses": {"200": ok_json("Alive", json!({"type": "object", "properties": {"status": {"const": "ok"}}}))}}},
            "/ready": {"get": {"summary": "Readiness: SIP bound, agents loaded, not draining (no token needed)", "operationId": "ready", "security": [],
                "responses": {
                    "200": ok_json("Ready", json!({"type": "object", "properties": {
                        "status": {"const": "ready"}, "sip": {"type": "object"}, "agents": {"type": "integer"},
                        "routed_agents_not_loaded": {"type": "array", "items": {"type": "string"}}}})),
                    "503": error_response("not_ready, with the reason")}}}
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::spec;
    use crate::store::{CallDetail, CallRecord, CallState, Direction, UsageItem};

    /// The webhook schema names every field a webhook is stored with.
    #[test]
    fn webhook_schema_names_every_field() {
        let spec = spec();
        let mut documented: Vec<&str> = spec["components"]["schemas"]["Webhook"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = crate::outbox::config::WEBHOOK_FIELDS.to_vec();
        documented.sort();
        fields.sort();
        assert_eq!(documented, fields);
    }

    /// The trunk schema names every field a trunk is stored with.
    #[test]
    fn trunk_schema_names_every_field() {
        let spec = spec();
        let mut documented: Vec<&str> = spec["components"]["schemas"]["Trunk"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = crate::sip::TRUNK_FIELDS.to_vec();
        documented.sort();
        fields.sort();
        assert_eq!(documented, fields);
    }

    /// Every string of a request body has its maximum, every object its property count (a
    /// boolean needs none).
    #[test]
    fn request_bodies_document_their_maxima() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        for body in ["PlaceCall", "Transfer"] {
            assert!(schemas[body]["maxProperties"].is_u64(), "{body}");
            for (name, field) in schemas[body]["properties"].as_object().unwrap() {
                let bounded = field["maxLength"].is_u64()
                    || field["maxProperties"].is_u64()
                    || field["type"] == "boolean";
                assert!(bounded, "{body}.{name} has no documented maximum");
            }
        }
        assert_eq!(
            schemas["PlaceCall"]["properties"]["to"]["maxLength"],
            super::MAX_TARGET
        );
    }

    /// Every field of a delivery as the API shows it is described.
    #[test]
    fn webhook_delivery_schema_matches_the_view() {
        use crate::store::webhooks::{Delivery, DeliveryAttempt, DeliveryStatus};
        let view = super::super::webhooks::DeliveryView::from(Delivery {
            id: 1,
            webhook: "crm".into(),
            message_id: "msg_c1_0".into(),
            kind: "call.started".into(),
            sequence_key: "c1".into(),
            payload: "{}".into(),
            status: DeliveryStatus::Dead,
            attempts: 1,
            next_attempt_at_ms: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            history: vec![DeliveryAttempt {
                at_ms: 0,
                code: Some(500),
                error: Some("the receiver answered 500".into()),
            }],
        });
        let body = serde_json::to_value(&view).unwrap();
        let spec = spec();
        let schema = &spec["components"]["schemas"]["WebhookDelivery"]["properties"];
        for key in body.as_object().unwrap().keys() {
            assert!(
                schema.get(key).is_some(),
                "WebhookDelivery does not describe {key:?}"
            );
        }
        assert_eq!(body["codes"], json!([500]));
    }

    /// Every field a stored call's detail serialises with is described, down to its usage items.
    #[test]
    fn call_detail_schema_matches_what_the_store_gives() {
        let detail = CallDetail {
            call: CallRecord {
                id: "c1".into(),
                direction: Direction::Inbound,
                caller: "1".into(),
                callee: "2".into(),
                agent: None,
                agent_version: None,
                transport: Some("openai-sip".into()),
                node: Some("node-1".into()),
                started_at_ms: 0,
                answered_at_ms: None,
                ended_at_ms: None,
                state: CallState::Active,
                end_reason: None,
                outcome: None,
                recording: None,
                input_tokens: 301,
                output_tokens: 111,
                metadata: json!(null),
            },
            events: Vec::new(),
            transcript: Vec::new(),
            usage: vec![UsageItem {
                provider: "openai".into(),
                stage: "speech-to-speech".into(),
                kind: "input-audio".into(),
                unit: "tokens".into(),
                amount: 280.0,
            }],
            latencies: Vec::new(),
            conversation: Default::default(),
        };
        let body = serde_json::to_value(&detail).unwrap();
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        let described = |schema: &str, value: &serde_json::Value| {
            for key in value.as_object().unwrap().keys() {
                assert!(
                    schemas[schema]["properties"].get(key).is_some(),
                    "{schema} does not describe {key:?}"
                );
            }
        };
        described("CallDetail", &body);
        described("CallRecord", &body["call"]);
        let item = &body["usage"][0];
        described("UsageItem", item);
        assert_eq!(
            schemas["UsageItem"]["required"],
            json!(["provider", "stage", "kind", "unit", "amount"])
        );
        assert_eq!(item["amount"], 280.0);
        assert_eq!(
            schemas["CallDetail"]["properties"]["usage"]["items"]["$ref"],
            "#/components/schemas/UsageItem"
        );
    }
}
