//! Raw bindings to the PocketSphinx 5 C library (`pocketsphinx.h`, `pocketsphinx/search.h`,
//! `pocketsphinx/logmath.h`, `pocketsphinx/err.h`), written by hand for the few functions the
//! host's recogniser calls. The library is compiled from its C sources by `build.rs`; README.md
//! says where the sources come from and why.
//!
//! Every function is as unsafe as its C original: pointers must be live objects of the right
//! kind, strings NUL-terminated, and a decoder used by one thread at a time.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_double, c_int, c_long, c_void};

/// `ps_config_t` (a `cmd_ln_s`): decoder configuration, reference counted.
#[repr(C)]
pub struct ps_config_t {
    _private: [u8; 0],
}

/// `ps_decoder_t`: one recogniser with its acoustic model, dictionary and searches.
#[repr(C)]
pub struct ps_decoder_t {
    _private: [u8; 0],
}

/// `logmath_t`: the decoder's integer log-probability arithmetic.
#[repr(C)]
pub struct logmath_t {
    _private: [u8; 0],
}

/// `err_lvl_t` values for [`err_set_loglevel`].
pub const ERR_DEBUG: c_int = 0;
pub const ERR_INFO: c_int = 1;
pub const ERR_WARN: c_int = 2;
pub const ERR_ERROR: c_int = 3;
pub const ERR_FATAL: c_int = 4;

unsafe extern "C" {
    /// A configuration with the default parameters (`defn` NULL: the standard set).
    pub fn ps_config_init(defn: *const c_void) -> *mut ps_config_t;
    /// Releases a reference; returns the new count.
    pub fn ps_config_free(config: *mut ps_config_t) -> c_int;
    /// Sets a parameter from a string (coerced to its type); NULL when the name is unknown.
    pub fn ps_config_set_str(
        config: *mut ps_config_t,
        name: *const c_char,
        val: *const c_char,
    ) -> *const c_void;
    pub fn ps_config_set_int(
        config: *mut ps_config_t,
        name: *const c_char,
        val: c_long,
    ) -> *const c_void;
    pub fn ps_config_set_float(
        config: *mut ps_config_t,
        name: *const c_char,
        val: c_double,
    ) -> *const c_void;
    pub fn ps_config_set_bool(
        config: *mut ps_config_t,
        name: *const c_char,
        val: c_int,
    ) -> *const c_void;

    /// A decoder for `config` (which it retains: the caller still frees its own reference);
    /// NULL on failure (a missing or bad model file).
    pub fn ps_init(config: *mut ps_config_t) -> *mut ps_decoder_t;
    /// Releases a reference; returns the new count (0: freed).
    pub fn ps_free(ps: *mut ps_decoder_t) -> c_int;
    /// The decoder's log-math object (owned by the decoder).
    pub fn ps_get_logmath(ps: *mut ps_decoder_t) -> *mut logmath_t;

    /// Adds a word with its whitespace-separated phones; returns its id (>= 0) or < 0.
    pub fn ps_add_word(
        ps: *mut ps_decoder_t,
        word: *const c_char,
        phones: *const c_char,
        update: c_int,
    ) -> c_int;
    /// Replaces the dictionary with `dictfile` (`fdictfile` NULL keeps the fillers; `format`
    /// must be NULL); < 0 on failure.
    pub fn ps_load_dict(
        ps: *mut ps_decoder_t,
        dictfile: *const c_char,
        fdictfile: *const c_char,
        format: *const c_char,
    ) -> c_int;

    /// Parses a JSGF grammar and adds it as search `name`; < 0 on failure.
    pub fn ps_add_jsgf_string(
        ps: *mut ps_decoder_t,
        name: *const c_char,
        jsgf_string: *const c_char,
    ) -> c_int;
    /// Loads an n-gram language model file as search `name`; < 0 on failure.
    pub fn ps_add_lm_file(ps: *mut ps_decoder_t, name: *const c_char, path: *const c_char)
    -> c_int;
    /// Makes search `name` the active one; < 0 when there is none by that name.
    pub fn ps_activate_search(ps: *mut ps_decoder_t, name: *const c_char) -> c_int;
    /// Removes search `name` and frees it; < 0 when there is none by that name.
    pub fn ps_remove_search(ps: *mut ps_decoder_t, name: *const c_char) -> c_int;

    pub fn ps_start_utt(ps: *mut ps_decoder_t) -> c_int;
    /// Decodes `n_samples` 16-bit samples at the configured rate; returns frames searched
    /// or < 0. `full_utt` non-zero: this is the whole utterance.
    pub fn ps_process_raw(
        ps: *mut ps_decoder_t,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    pub fn ps_end_utt(ps: *mut ps_decoder_t) -> c_int;
    /// The best hypothesis so far (owned by the decoder, valid until the next call) or NULL;
    /// its path score goes to `out_best_score`.
    pub fn ps_get_hyp(ps: *mut ps_decoder_t, out_best_score: *mut i32) -> *const c_char;
    /// Log posterior probability of the best hypothesis (0, i.e. 1.0, unless `bestpath` is
    /// on and the utterance ended).
    pub fn ps_get_prob(ps: *mut ps_decoder_t) -> i32;
    /// Frames searched in the current utterance.
    pub fn ps_get_n_frames(ps: *mut ps_decoder_t) -> c_int;

    /// Converts a log value of `lmath` to linear.
    pub fn logmath_exp(lmath: *mut logmath_t, logb_p: c_int) -> c_double;

    /// Sets the process-wide minimum log level (messages go to stderr); returns the old one.
    pub fn err_set_loglevel(lvl: c_int) -> c_int;
}
