//! The memory limiter of one call's store: caps linear memory and remembers that a growth was
//! refused, so the trap that follows is reported as a memory fault rather than a plain trap.

use wasmtime::ResourceLimiter;

/// Table elements an instance may have; far above what a Rust agent uses, low enough that a
/// runaway table cannot exhaust host memory.
const MAX_TABLE_ELEMENTS: usize = 100_000;

pub(crate) struct Limiter {
    pub memory_bytes: usize,
    /// A memory growth was refused during this session.
    pub refused: bool,
}

impl Limiter {
    pub fn new(memory_bytes: usize) -> Self {
        Limiter {
            memory_bytes,
            refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
