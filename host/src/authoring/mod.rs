//! Tools for agent authors that run outside a live host: `switchboard new` (a project that
//! builds and answers a call as it is) and scripted conversation tests (`switchboard test`).

pub mod new;
pub mod script;
