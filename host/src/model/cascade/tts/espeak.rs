//! espeak-ng as the cascade's voice: local, no key, no network, each sentence synthesised as
//! it comes (and cached, as the offline provider's prompts are).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{TextToSpeech, TtsEvent, TtsInput, TtsStream, pcm_formats};
use crate::model::espeak::{Espeak, RATES};
use crate::model::{AudioFormat, ErrorKind, ProviderError};

#[derive(Debug)]
pub struct EspeakTts {
    espeak: Arc<Espeak>,
    /// The espeak-ng voice when the session's language names none.
    voice: String,
}

impl EspeakTts {
    pub(crate) fn new(espeak: Arc<Espeak>, voice: String) -> EspeakTts {
        EspeakTts { espeak, voice }
    }
}

impl TextToSpeech for EspeakTts {
    fn name(&self) -> &'static str {
        "espeak"
    }

    fn formats(&self) -> Vec<AudioFormat> {
        pcm_formats(&RATES)
    }

    /// espeak-ng voices are languages (`en-us`): the session's language picks one, the agent's
    /// voice name (meant for a cloud voice) does not.
    fn open(
        &self,
        format: AudioFormat,
        _voice: Option<String>,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<TtsStream, ProviderError>> {
        Box::pin(async move {
            self.espeak
                .available()
                .await
                .map_err(|reason| ProviderError::new(ErrorKind::Local, None, reason))?;
            let voice = language
                .map(|l| l.to_ascii_lowercase())
                .unwrap_or_else(|| self.voice.clone());
            let (input_tx, input) = mpsc::channel(32);
            let (events, events_rx) = mpsc::channel(64);
            tokio::spawn(
                speak(self.espeak.clone(), voice, format, input, events)
                    .instrument(tracing::Span::current()),
            );
            Ok(TtsStream {
                input: input_tx,
                events: events_rx,
            })
        })
    }
}

/// One utterance: each piece in turn, until its end or until nobody listens.
async fn speak(
    espeak: Arc<Espeak>,
    voice: String,
    format: AudioFormat,
    mut input: mpsc::Receiver<TtsInput>,
    events: mpsc::Sender<TtsEvent>,
) {
    while let Some(piece) = input.recv().await {
        let text = match piece {
            TtsInput::Text(text) => text,
            TtsInput::End => {
                let _ = events.send(TtsEvent::Done).await;
                return;
            }
        };
        let result = espeak
            .speak(&voice, format, &text, |data| {
                let events = events.clone();
                async move { events.send(TtsEvent::Audio(data)).await.is_ok() }
            })
            .await;
        let event = match result {
            Ok(()) => TtsEvent::Usage {
                characters: text.chars().count() as u64,
            },
            Err(message) => TtsEvent::Failed(ProviderError::new(ErrorKind::Local, None, message)),
        };
        let failed = matches!(event, TtsEvent::Failed(_));
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
}
