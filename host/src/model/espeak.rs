//! Speech from the local espeak-ng program, streamed as it synthesises and kept in the speech
//! cache for the next call: the offline provider's voice, and the cascade's local TTS.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command as Process;
use tokio::sync::OnceCell;

use super::AudioFormat;
use super::speech_cache::{Lookup, Speech, SpeechCache};
use crate::resample::Pcm16Converter;

/// Rates speech is offered at: espeak-ng's own (22.05 kHz) and the call rates, so a call gets
/// its codec's rate and the resampling is done once per prompt, into the speech cache.
pub(crate) const RATES: [u32; 5] = [8_000, 16_000, 22_050, 24_000, 48_000];

/// Audio is handed out in 100 ms chunks as espeak produces it.
const CHUNK_MS: usize = 100;

/// The espeak-ng program with its speed, and the cache its speech is kept in.
#[derive(Debug)]
pub(crate) struct Espeak {
    program: PathBuf,
    words_per_minute: u32,
    cache: SpeechCache,
    /// Whether the program runs, checked once.
    check: OnceCell<Result<(), String>>,
}

impl Espeak {
    pub(crate) fn new(program: PathBuf, words_per_minute: u32, cache_bytes: usize) -> Espeak {
        Espeak {
            program,
            words_per_minute,
            cache: SpeechCache::new(cache_bytes),
            check: OnceCell::new(),
        }
    }

    pub(crate) fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// Whether the program runs (`--version`), asked once; the reason when it does not.
    pub(crate) async fn available(&self) -> Result<(), String> {
        self.check
            .get_or_init(|| async {
                match Process::new(&self.program)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(format!("`--version` exited with {s}")),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .clone()
    }

    /// Speak `text` in `voice` as 16-bit PCM in `format`, handing [`CHUNK_MS`] chunks to `send`
    /// as they come: from the cache, or from espeak-ng as it synthesises (then cached).
    /// `send` returns false when nobody listens any more; the speech stops there.
    pub(crate) async fn speak<F, Fut>(
        &self,
        voice: &str,
        format: AudioFormat,
        text: &str,
        mut send: F,
    ) -> Result<(), String>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let rate = format.sample_rate();
        match self
            .cache
            .lookup(voice, self.words_per_minute, rate, text)
            .await
        {
            Lookup::Hit(speech) => {
                for data in speech.pcm.chunks(chunk_bytes(format)) {
                    if !send(data.to_vec()).await {
                        break;
                    }
                }
                Ok(())
            }
            Lookup::Miss(filler) => {
                if let Some(speech) = self.synthesise(voice, format, text, &mut send).await? {
                    self.cache.fill(filler, speech);
                }
                Ok(())
            }
        }
    }

    /// Run espeak-ng, streaming its audio out in `output` as it comes; the whole utterance is
    /// returned for the cache, or `None` when the listener went away before the end.
    async fn synthesise<F, Fut>(
        &self,
        voice: &str,
        output: AudioFormat,
        text: &str,
        send: &mut F,
    ) -> Result<Option<Speech>, String>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut child = Process::new(&self.program)
            .args(["--stdout", "--stdin", "-v", voice, "-s"])
            .arg(self.words_per_minute.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        // Text goes through stdin so that words starting with '-' are never read as options.
        let mut stdin = child.stdin.take().ok_or("espeak-ng stdin missing")?;
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("writing text to espeak-ng: {e}"))?;
        drop(stdin);
        let mut stdout = child.stdout.take().ok_or("espeak-ng stdout missing")?;

        let mut buf = Vec::with_capacity(16 * 1024);
        let mut pcm = Vec::new();
        let mut header: Option<(AudioFormat, usize)> = None;
        let mut converter: Option<Pcm16Converter> = None;
        let mut read_buf = vec![0u8; 8192];
        loop {
            let n = stdout
                .read(&mut read_buf)
                .await
                .map_err(|e| format!("reading espeak-ng output: {e}"))?;
            let eof = n == 0;
            buf.extend_from_slice(&read_buf[..n]);
            if header.is_none() {
                match parse_wav_header(&buf) {
                    Ok(Some(found)) => header = Some(found),
                    Ok(None) if !eof => continue,
                    Ok(None) => break,
                    Err(e) => return Err(e),
                }
            }
            let (format, data_start) = header.expect("header parsed above");
            let converter = match converter.as_mut() {
                Some(c) => c,
                None => converter.insert(
                    Pcm16Converter::new(format.sample_rate(), output.sample_rate())
                        .map_err(|e| format!("espeak-ng speech for a {output} session: {e}"))?,
                ),
            };
            // Whole chunks as they come; at the end the tail too.
            let available = buf.len() - data_start;
            let chunk = chunk_bytes(format);
            let take = if eof {
                available & !1
            } else {
                available / chunk * chunk
            };
            let end = data_start + take;
            let converted = converter
                .convert(&buf[data_start..end], eof)
                .map_err(|e| e.to_string())?;
            for data in converted.chunks(chunk_bytes(output)) {
                if !send(data.to_vec()).await {
                    return Ok(None);
                }
            }
            pcm.extend_from_slice(&converted);
            buf.drain(..end);
            header = Some((format, 0));
            if eof {
                break;
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("waiting for espeak-ng: {e}"))?;
        if !status.success() || header.is_none() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            return Err(format!("espeak-ng failed ({status}): {}", err.trim()));
        }
        Ok(Some(Speech {
            format: output,
            pcm,
        }))
    }
}

/// Bytes of one [`CHUNK_MS`] chunk (whole samples).
fn chunk_bytes(format: AudioFormat) -> usize {
    (format.bytes_per_ms() as usize * CHUNK_MS) & !1
}

/// Parse a RIFF/WAVE header; returns the audio format and where sample data starts, or
/// `None` when more bytes are needed. espeak-ng streams, so chunk sizes are placeholders.
fn parse_wav_header(buf: &[u8]) -> Result<Option<(AudioFormat, usize)>, String> {
    if buf.len() < 12 {
        return Ok(None);
    }
    if &buf[0..4] != b"RIFF" || &buf[8..12] != b"WAVE" {
        return Err("espeak-ng output is not a WAV stream".into());
    }
    let mut pos = 12;
    let mut format = None;
    loop {
        if buf.len() < pos + 8 {
            return Ok(None);
        }
        let id = &buf[pos..pos + 4];
        let size = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let body = pos + 8;
        if id == b"data" {
            return match format {
                Some(f) => Ok(Some((f, body))),
                None => Err("WAV data before fmt chunk".into()),
            };
        }
        if buf.len() < body + size {
            return Ok(None);
        }
        if id == b"fmt " {
            if size < 16 {
                return Err("short WAV fmt chunk".into());
            }
            let f = &buf[body..body + 16];
            let tag = u16::from_le_bytes([f[0], f[1]]);
            let channels = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            let bits = u16::from_le_bytes([f[14], f[15]]);
            if tag != 1 || channels != 1 || bits != 16 {
                return Err(format!(
                    "unexpected espeak-ng WAV format (tag {tag}, {channels} channels, {bits} bits)"
                ));
            }
            format = Some(AudioFormat::Pcm16 { rate });
        }
        pos = body + size + (size & 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_header(rate: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2).to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data\x00\xf0\xff\x7f");
        h
    }

    #[test]
    fn parses_streaming_wav_header() {
        let h = wav_header(22050);
        assert_eq!(parse_wav_header(&h[..20]).unwrap(), None);
        assert_eq!(
            parse_wav_header(&h).unwrap(),
            Some((AudioFormat::Pcm16 { rate: 22050 }, 44))
        );
        assert!(parse_wav_header(b"OggS\0\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn rejects_stereo() {
        let mut h = wav_header(22050);
        h[22] = 2;
        assert!(parse_wav_header(&h).is_err());
    }
}
