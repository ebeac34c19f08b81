//! A response's lifecycle: its audio generated in chunks faster than real time, its end,
//! cancellation on barge-in, and function calls.

use super::*;

impl Session {
    pub(super) fn response_object(
        &self,
        id: &str,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        details: Value,
    ) -> Value {
        json!({"object": "realtime.response", "id": id, "status": status, "status_details": details,
            "output": output, "conversation_id": "conv_fake", "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": self.config["audio"]["output"]["format"], "voice": self.config["audio"]["output"]["voice"]}},
            "usage": usage, "metadata": null})
    }

    pub(super) fn usage(&self) -> Value {
        let (it, ia, ot, oa) = self.script.usage;
        json!({"total_tokens": it + ia + ot + oa, "input_tokens": it + ia, "output_tokens": ot + oa,
            "input_token_details": {"text_tokens": it, "audio_tokens": ia, "image_tokens": 0, "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": ot, "audio_tokens": oa}})
    }

    pub(super) async fn respond(
        &mut self,
        ws: &mut Ws,
        instructions: &str,
        client_event_id: &Value,
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let reply = self.replies.pop_front().unwrap_or(Reply::Echo);
        let (transcript, audio_ms) = match reply {
            Reply::Silence => return Ok(Flow::Continue),
            Reply::Raw(frames) => {
                for f in frames {
                    ws.send(Message::text(f)).await?;
                }
                return Ok(Flow::Continue);
            }
            Reply::DropSocket => return Ok(Flow::Drop),
            Reply::Error {
                kind,
                code,
                message,
            } => {
                self.send(
                    ws,
                    json!({"type": "error", "error": {"type": kind, "code": code,
                    "message": message, "param": null, "event_id": client_event_id}}),
                )
                .await?;
                return Ok(Flow::Continue);
            }
            Reply::ToolCall { name, arguments } => {
                self.tool_call(ws, &name, &arguments).await?;
                return Ok(Flow::Continue);
            }
            Reply::Speech {
                transcript,
                audio_ms,
            } => (transcript, audio_ms),
            Reply::Echo => {
                let quoted = match (instructions.find('"'), instructions.rfind('"')) {
                    (Some(a), Some(b)) if b > a => instructions[a + 1..b].to_string(),
                    _ => "I am the fake model.".to_string(),
                };
                let ms = 60 * quoted.split_whitespace().count().max(1) as u32 * 5;
                (quoted, ms)
            }
        };
        let resp_id = self.id("resp");
        let item_id = self.id("item_A");
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []});
        let created =
            self.response_object(&resp_id, "in_progress", vec![], Value::Null, Value::Null);
        self.send(ws, json!({"type": "response.created", "response": created}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        let prev = self.last_item.replace(item_id.clone());
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        self.send(ws, json!({"type": "response.content_part.added", "response_id": resp_id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})).await?;
        self.items.insert(
            item_id.clone(),
            Item {
                role: "assistant".into(),
                kind: "message".into(),
                audio_ms: 0,
            },
        );
        // Split words over audio chunks: each delta carries delta_ms of audio and maybe a word.
        let n = audio_ms.div_ceil(self.script.delta_ms).max(1) as usize;
        let words: Vec<&str> = transcript.split_inclusive(' ').collect();
        let fmt = self.out_fmt();
        let mut chunks = VecDeque::new();
        for i in 0..n {
            let ms = self
                .script
                .delta_ms
                .min(audio_ms - (i as u32) * self.script.delta_ms);
            let from = i * words.len() / n;
            let to = (i + 1) * words.len() / n;
            let audio = match (&self.script.voice, fmt) {
                (Some(v), Fmt::Pcm24k) => voice_chunk(v, &mut self.voice_pos, ms as usize * 24),
                _ => fmt.tone(ms),
            };
            chunks.push_back((words[from..to].concat(), audio));
        }
        self.active = Some(ActiveResponse {
            id: resp_id,
            item,
            chunks,
            transcript,
        });
        Ok(Flow::Continue)
    }

    pub(super) async fn emit_chunk(
        &mut self,
        ws: &mut Ws,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let Some((text, mut audio)) = active.chunks.pop_front() else {
            return Ok(());
        };
        let (resp_id, item_id) = (
            active.id.clone(),
            active.item["id"].as_str().unwrap_or("").to_string(),
        );
        let last = active.chunks.is_empty();
        let ids = json!({"response_id": resp_id, "item_id": item_id, "output_index": 0, "content_index": 0});
        if !text.is_empty() {
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio_transcript.delta");
            ev["delta"] = json!(text);
            self.send(ws, ev).await?;
        }
        let fmt = self.out_fmt();
        if let Some(item) = self.items.get_mut(&item_id) {
            item.audio_ms += (audio.len() / fmt.bytes_per_ms()) as u64;
        }
        self.audio_out = true;
        if self.script.stamp_audio && audio.len() >= crate::support::model_audio::STAMP_LEN {
            stamp(&mut audio, self.epoch);
        }
        let mut ev = ids.clone();
        ev["type"] = json!("response.output_audio.delta");
        ev["delta"] = json!(B64.encode(&audio));
        self.send(ws, ev).await?;
        if last {
            self.finish(ws, "completed", Value::Null).await?;
        }
        Ok(())
    }

    pub(super) async fn finish(
        &mut self,
        ws: &mut Ws,
        status: &str,
        details: Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let item_id = active.item["id"].as_str().unwrap_or("").to_string();
        let ids = json!({"response_id": active.id, "item_id": item_id, "output_index": 0, "content_index": 0});
        let completed = status == "completed";
        let mut item = active.item.clone();
        item["status"] = json!(if completed { "completed" } else { "incomplete" });
        item["content"] = json!([{"type": "output_audio", "transcript": active.transcript}]);
        if completed {
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio.done");
            self.send(ws, ev).await?;
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio_transcript.done");
            ev["transcript"] = json!(active.transcript);
            self.send(ws, ev).await?;
            let mut ev = ids.clone();
            ev["type"] = json!("response.content_part.done");
            ev["part"] = json!({"type": "audio", "transcript": active.transcript});
            self.send(ws, ev).await?;
        }
        self.send(ws, json!({"type": "response.output_item.done", "response_id": active.id, "output_index": 0, "item": item})).await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": null, "item": item}),
        )
        .await?;
        let resp = self.response_object(&active.id, status, vec![item], self.usage(), details);
        self.send(ws, json!({"type": "response.done", "response": resp}))
            .await
    }

    pub(super) async fn cancel(
        &mut self,
        ws: &mut Ws,
        reason: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.finish(
            ws,
            "cancelled",
            json!({"type": "cancelled", "reason": reason}),
        )
        .await
    }

    pub(super) async fn tool_call(
        &mut self,
        ws: &mut Ws,
        name: &str,
        arguments: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let resp_id = self.id("resp");
        let item_id = self.id("item_F");
        let call_id = self.id("call");
        self.function_calls.push(call_id.clone());
        let mut item = json!({"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "name": name, "call_id": call_id, "arguments": ""});
        let created =
            self.response_object(&resp_id, "in_progress", vec![], Value::Null, Value::Null);
        self.send(ws, json!({"type": "response.created", "response": created}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        let prev = self.last_item.replace(item_id.clone());
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        let mid = arguments.len() / 2;
        let split = (0..=mid)
            .rev()
            .find(|&i| arguments.is_char_boundary(i))
            .unwrap_or(0);
        for delta in [&arguments[..split], &arguments[split..]] {
            self.send(
                ws,
                json!({"type": "response.function_call_arguments.delta", "response_id": resp_id,
                "item_id": item_id, "output_index": 0, "call_id": call_id, "delta": delta}),
            )
            .await?;
        }
        self.send(ws, json!({"type": "response.function_call_arguments.done", "response_id": resp_id,
            "item_id": item_id, "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments})).await?;
        item["status"] = json!("completed");
        item["arguments"] = json!(arguments);
        self.items.insert(
            item_id.clone(),
            Item {
                role: String::new(),
                kind: "function_call".into(),
                audio_ms: 0,
            },
        );
        self.send(ws, json!({"type": "response.output_item.done", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item}),
        )
        .await?;
        let resp =
            self.response_object(&resp_id, "completed", vec![item], self.usage(), Value::Null);
        self.send(ws, json!({"type": "response.done", "response": resp}))
            .await
    }
}
