//! Tools for agent authors: `switchboard new` (a project that builds and answers a call as is).

pub mod new;
