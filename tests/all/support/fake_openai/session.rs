//! A session's state and the client events it handles: `session.update`, audio appends and the
//! server VAD, conversation items, truncation, function call outputs.

use super::*;

impl Session {
    pub(super) fn new(script: Arc<Script>, model: String, epoch: Instant) -> Self {
        let config = json!({
            "type": "realtime", "object": "realtime.session", "id": "sess_fake001",
            "model": model, "output_modalities": ["audio"], "instructions": "",
            "tools": [], "tool_choice": "auto", "max_output_tokens": "inf",
            "truncation": "auto", "tracing": null, "prompt": null, "expires_at": 0, "include": null,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": null,
                          "noise_reduction": null,
                          "turn_detection": {"type": "server_vad", "threshold": 0.5,
                              "prefix_padding_ms": 300, "silence_duration_ms": 500,
                              "idle_timeout_ms": null, "create_response": true,
                              "interrupt_response": true}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}
            }
        });
        Self {
            replies: script.replies.iter().cloned().collect(),
            script,
            epoch,
            config,
            next_event: 0,
            next_id: 0,
            input_bytes: 0,
            speaking_since_ms: None,
            silence_ms: 0,
            user_item: None,
            last_item: None,
            items: HashMap::new(),
            function_calls: Vec::new(),
            audio_out: false,
            active: None,
            voice_pos: 0,
        }
    }

    pub(super) fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:03}", self.next_id)
    }

    pub(super) fn in_fmt(&self) -> Fmt {
        Fmt::parse(&self.config["audio"]["input"]["format"]).unwrap_or(Fmt::Pcm24k)
    }

    pub(super) fn out_fmt(&self) -> Fmt {
        Fmt::parse(&self.config["audio"]["output"]["format"]).unwrap_or(Fmt::Pcm24k)
    }

    pub(super) async fn send(
        &mut self,
        ws: &mut Ws,
        mut event: Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.next_event += 1;
        event["event_id"] = json!(format!("event_{:04}", self.next_event));
        ws.send(Message::text(event.to_string())).await
    }

    pub(super) async fn error(
        &mut self,
        ws: &mut Ws,
        code: &str,
        message: &str,
        client_event_id: &Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.send(
            ws,
            json!({"type": "error", "error": {"type": "invalid_request_error",
            "code": code, "message": message, "param": null, "event_id": client_event_id}}),
        )
        .await
    }

    pub(super) async fn on_client_event(
        &mut self,
        ws: &mut Ws,
        ev: Value,
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let eid = ev.get("event_id").cloned().unwrap_or(Value::Null);
        match ev["type"].as_str().unwrap_or("") {
            "session.update" => {
                let s = &ev["session"];
                if s["type"] != "realtime" {
                    self.error(
                        ws,
                        "missing_required_parameter",
                        "Missing required parameter: 'session.type'.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                let new_voice = &s["audio"]["output"]["voice"];
                if self.audio_out
                    && !new_voice.is_null()
                    && *new_voice != self.config["audio"]["output"]["voice"]
                {
                    self.error(
                        ws,
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                for fmt in [
                    &s["audio"]["input"]["format"],
                    &s["audio"]["output"]["format"],
                ] {
                    if !fmt.is_null() && Fmt::parse(fmt).is_none() {
                        self.error(ws, "invalid_value", "Invalid audio format.", &eid)
                            .await?;
                        return Ok(Flow::Continue);
                    }
                }
                merge(&mut self.config, s);
                let updated = json!({"type": "session.updated", "session": self.config.clone()});
                self.send(ws, updated).await?;
            }
            "input_audio_buffer.append" => {
                let Some(bytes) = ev["audio"].as_str().and_then(|a| B64.decode(a).ok()) else {
                    self.error(ws, "invalid_value", "audio is not valid base64", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                };
                if bytes.len() > 15 * 1024 * 1024 {
                    self.error(ws, "invalid_value", "append larger than 15 MiB", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                }
                return self.vad(ws, &bytes).await;
            }
            "input_audio_buffer.commit" => {
                if self.input_bytes == 0 {
                    self.error(
                        ws,
                        "input_audio_buffer_commit_empty",
                        "buffer is empty",
                        &eid,
                    )
                    .await?;
                } else {
                    let item = self.id("item_U");
                    self.commit_user(ws, item).await?;
                }
            }
            "input_audio_buffer.clear" => {
                self.input_bytes = 0;
                self.send(ws, json!({"type": "input_audio_buffer.cleared"}))
                    .await?;
            }
            "conversation.item.create" => {
                let mut item = ev["item"].clone();
                if item["type"] == "function_call_output" {
                    let call = item["call_id"].as_str().unwrap_or("");
                    if !self.function_calls.iter().any(|c| c == call) {
                        self.error(
                            ws,
                            "invalid_value",
                            "No function call with this call_id.",
                            &eid,
                        )
                        .await?;
                        return Ok(Flow::Continue);
                    }
                }
                let id = self.id("item_C");
                item["id"] = json!(id);
                item["object"] = json!("realtime.item");
                item["status"] = json!("completed");
                self.items.insert(
                    id.clone(),
                    Item {
                        role: item["role"].as_str().unwrap_or("").into(),
                        kind: item["type"].as_str().unwrap_or("").into(),
                        audio_ms: 0,
                    },
                );
                let prev = self.last_item.replace(id);
                self.send(ws, json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item})).await?;
                self.send(ws, json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item})).await?;
            }
            "conversation.item.truncate" => {
                let item_id = ev["item_id"].as_str().unwrap_or("").to_string();
                let end = ev["audio_end_ms"].as_u64();
                let Some(item) = self.items.get(&item_id) else {
                    self.error(ws, "invalid_value", "Item not found.", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                };
                if item.role != "assistant" || item.kind != "message" {
                    self.error(
                        ws,
                        "invalid_value",
                        "Only assistant messages can be truncated.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                match end {
                    Some(end) if end <= item.audio_ms => {
                        self.send(
                            ws,
                            json!({"type": "conversation.item.truncated", "item_id": item_id,
                            "content_index": 0, "audio_end_ms": end}),
                        )
                        .await?;
                    }
                    _ => {
                        let msg = format!(
                            "audio_end_ms must not exceed the audio length ({} ms)",
                            item.audio_ms
                        );
                        self.error(ws, "invalid_value", &msg, &eid).await?;
                    }
                }
            }
            "response.create" => {
                if self.active.is_some() {
                    self.error(
                        ws,
                        "conversation_already_has_active_response",
                        "Conversation already has an active response.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                let instructions = ev["response"]["instructions"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return self.respond(ws, &instructions, &eid).await;
            }
            "response.cancel" => {
                if self.active.is_none() {
                    self.error(
                        ws,
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        &eid,
                    )
                    .await?;
                } else {
                    self.cancel(ws, "client_cancelled").await?;
                }
            }
            _ => {
                self.error(ws, "invalid_event", "Unknown event type.", &eid)
                    .await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Energy VAD over each appended chunk.
    pub(super) async fn vad(
        &mut self,
        ws: &mut Ws,
        bytes: &[u8],
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let fmt = self.in_fmt();
        self.input_bytes += bytes.len();
        let td = self.config["audio"]["input"]["turn_detection"].clone();
        let Some(threshold) = self.script.vad_rms.filter(|_| !td.is_null()) else {
            return Ok(Flow::Continue);
        };
        let now_ms = (self.input_bytes / fmt.bytes_per_ms()) as u64;
        let chunk_ms = (bytes.len() / fmt.bytes_per_ms()) as u64;
        let loud = rms(&fmt.samples(bytes)) > threshold;
        match (self.speaking_since_ms, loud) {
            (None, true) => {
                let start = now_ms.saturating_sub(chunk_ms);
                let pad = td["prefix_padding_ms"].as_u64().unwrap_or(300);
                let item = self.id("item_U");
                self.user_item = Some(item.clone());
                self.speaking_since_ms = Some(start);
                self.silence_ms = 0;
                self.send(
                    ws,
                    json!({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": start.saturating_sub(pad), "item_id": item}),
                )
                .await?;
                if self.active.is_some() && td["interrupt_response"] != false {
                    self.cancel(ws, "turn_detected").await?;
                }
            }
            (Some(_), true) => self.silence_ms = 0,
            (Some(_), false) => {
                self.silence_ms += chunk_ms;
                let needed = td["silence_duration_ms"].as_u64().unwrap_or(500);
                if self.silence_ms >= needed {
                    self.speaking_since_ms = None;
                    let item = self.user_item.take().unwrap_or_default();
                    self.send(
                        ws,
                        json!({"type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": now_ms - self.silence_ms, "item_id": item}),
                    )
                    .await?;
                    self.commit_user(ws, item).await?;
                    if td["create_response"] != false {
                        return self.respond(ws, "", &Value::Null).await;
                    }
                }
            }
            (None, false) => {}
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn commit_user(
        &mut self,
        ws: &mut Ws,
        item_id: String,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.input_bytes = 0;
        let prev = self.last_item.replace(item_id.clone());
        self.send(ws, json!({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})).await?;
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": null}]});
        self.items.insert(
            item_id.clone(),
            Item {
                role: "user".into(),
                kind: "message".into(),
                audio_ms: 0,
            },
        );
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item}),
        )
        .await?;
        if !self.config["audio"]["input"]["transcription"].is_null() {
            let t = self.script.caller_transcript.clone();
            self.send(
                ws,
                json!({"type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id, "content_index": 0, "delta": t}),
            )
            .await?;
            self.send(ws, json!({"type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id, "content_index": 0, "transcript": t,
                "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 8, "total_tokens": 48}})).await?;
        }
        Ok(())
    }
}
