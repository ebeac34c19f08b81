//! Cascade brains: the caller's speech to text (STT), the text and the conversation to a
//! language model's answer (LLM, any OpenAI-compatible chat completions endpoint), the answer to
//! speech (TTS), composed behind the same [`ModelProvider`](super::ModelProvider) trait as the
//! speech-to-speech providers, so the call logic does not know it talks to a cascade.
//!
//! Each stage is an interface with several services behind it: [`stt::SpeechToText`],
//! [`tts::TextToSpeech`] and the chat client of [`llm`].

pub mod history;
pub mod llm;
pub mod sentences;
pub mod stt;
pub mod tts;
