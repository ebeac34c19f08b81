//! Audio bodies arrive in chunks cut anywhere (an HTTP body, a base64 frame); the cascade
//! takes whole 16-bit samples only, so a split sample's first byte waits for the next chunk.

/// Carries the odd byte of a 16-bit PCM stream from one chunk to the next.
#[derive(Debug, Default)]
pub(super) struct WholeSamples {
    odd: Option<u8>,
}

impl WholeSamples {
    /// The whole samples of `chunk` after any byte carried over; empty if none is complete.
    pub(super) fn take(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + 1);
        out.extend(self.odd.take());
        out.extend_from_slice(chunk);
        if out.len() % 2 == 1 {
            self.odd = out.pop();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_bytes_wait_for_the_next_chunk() {
        let mut samples = WholeSamples::default();
        assert_eq!(samples.take(&[1, 2, 3]), vec![1, 2]);
        assert_eq!(samples.take(&[4]), vec![3, 4]);
        assert_eq!(samples.take(&[5]), Vec::<u8>::new());
        assert_eq!(samples.take(&[6, 7, 8]), vec![5, 6, 7, 8]);
    }
}
