//! The echo provider: the caller hears their own audio back, as on a PBX's echo test line.
//! It checks a line end to end (codec, both media directions, delay) with no model, no key and
//! no network, and it is the model stand-in of the media load benchmark: its cost is only the
//! host's own audio path. It has no voice: spoken text (the greeting, [`Command::Say`]) becomes
//! an agent transcript only, so the record shows what an agent asked to say.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, Command, ConnectError, FormatSupport, ModelEvent,
    ModelProvider, ModelSession, ResponseStatus, Role, SessionSettings, check_formats,
};

const NAME: &str = "echo";
/// The single item all echoed audio belongs to (it never ends, and barge-in never cuts it).
const ITEM: &str = "echo";

/// `[model] provider = "echo"`: nothing to set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {}

/// Sends every input frame straight back as output.
#[derive(Debug, Default)]
pub struct EchoProvider;

impl EchoProvider {
    fn formats() -> Vec<AudioFormat> {
        // G.711 passes through untouched; PCM at each codec rate the call layer may pick.
        [8_000, 16_000, 24_000, 48_000]
            .into_iter()
            .map(|rate| AudioFormat::Pcm16 { rate })
            .chain([AudioFormat::Pcmu8k, AudioFormat::Pcma8k])
            .collect()
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        // Echoing needs no transcoding only when both directions share one format.
        if settings.output_format != settings.input_format {
            return Err(ConnectError::UnsupportedFormat {
                provider: NAME,
                direction: "output (it must equal the input format)",
                format: settings.output_format,
            });
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let format = settings.input_format;
        tokio::spawn(
            run(settings.greeting, format, cmd_rx, ev_tx).instrument(tracing::Span::current()),
        );
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: format,
            output_format: format,
            loopback: true,
        })
    }
}

async fn run(
    greeting: Option<String>,
    format: AudioFormat,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ModelEvent>,
) {
    let mut said = 0u64;
    let mut say = async |text: String| {
        said += 1;
        let item_id = format!("echo_say_{said}");
        let transcript = ModelEvent::Transcript {
            role: Role::Agent,
            item_id,
            text,
            is_final: true,
        };
        let done = ModelEvent::ResponseDone {
            status: ResponseStatus::Completed,
        };
        events.send(transcript).await.is_ok() && events.send(done).await.is_ok()
    };
    if let Some(text) = greeting
        && !say(text).await
    {
        return;
    }
    while let Some(command) = commands.recv().await {
        let alive = match command {
            Command::Audio(data) => events
                .send(ModelEvent::Audio {
                    item_id: ITEM.into(),
                    data,
                    format,
                })
                .await
                .is_ok(),
            Command::Say(text) => say(text).await,
            Command::Close => {
                let _ = events.send(ModelEvent::Closed(CloseReason::Normal)).await;
                false
            }
            // Nothing generates, so there is nothing to answer, cut short or re-instruct.
            Command::ToolResult { .. }
            | Command::Truncate { .. }
            | Command::CancelResponse
            | Command::Update(_)
            | Command::Expect(_) => true,
        };
        if !alive {
            return;
        }
    }
}

impl ModelProvider for EchoProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Nothing is generated, so any agent's settings fit the running session.
    fn updates_live(&self, _running: &SessionSettings, _next: &SessionSettings) -> bool {
        true
    }

    fn formats(&self) -> FormatSupport {
        FormatSupport {
            input: Self::formats(),
            output: Self::formats(),
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(input: AudioFormat, output: AudioFormat) -> SessionSettings {
        SessionSettings {
            model: None,
            instructions: String::new(),
            voice: None,
            language: None,
            tools: vec![],
            greeting: Some("echo test".into()),
            input_format: input,
            output_format: output,
            turn_detection: Default::default(),
            input_transcription: false,
            history: Vec::new(),
        }
    }

    #[tokio::test]
    async fn returns_the_callers_audio_in_order() {
        let mut session = EchoProvider
            .connect(settings(AudioFormat::Pcmu8k, AudioFormat::Pcmu8k))
            .await
            .unwrap();
        // The greeting is a transcript only: there is no voice to speak it.
        match session.recv().await.unwrap() {
            ModelEvent::Transcript { role, text, .. } => {
                assert_eq!((role, text.as_str()), (Role::Agent, "echo test"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            session.recv().await,
            Some(ModelEvent::ResponseDone { .. })
        ));
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 160]).collect();
        for f in &frames {
            session.send(Command::Audio(f.clone())).await.unwrap();
        }
        for f in &frames {
            match session.recv().await.unwrap() {
                ModelEvent::Audio { data, format, .. } => {
                    assert_eq!(&data, f);
                    assert_eq!(format, AudioFormat::Pcmu8k);
                }
                other => panic!("{other:?}"),
            }
        }
        session.send(Command::Close).await.unwrap();
        assert_eq!(
            session.recv().await,
            Some(ModelEvent::Closed(CloseReason::Normal))
        );
        assert_eq!(session.recv().await, None);
    }

    #[tokio::test]
    async fn refuses_different_formats_each_way() {
        let err = EchoProvider
            .connect(settings(
                AudioFormat::Pcm16 { rate: 48_000 },
                AudioFormat::Pcm16 { rate: 16_000 },
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::UnsupportedFormat { .. }),
            "{err}"
        );
    }
}
