//! Tools for agent authors that run outside a live host: scripted conversation tests
//! (`switchboard test`).

pub mod script;
