//! The CNI protocol: configuration, results in every spec version, errors with their codes, the
//! environment, and the verb dispatcher a plugin's `main` hands itself to.
//!
//! Data flows one way: [`skel::run`] reads the environment and stdin, parses them into a
//! [`Request`], calls the plugin's verb, and prints the result or the error. Plugins never print.

pub mod args;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod fault;
pub mod json;
pub mod linkconf;
pub mod result;
pub mod rollback;
pub mod skel;
pub mod suite;
pub mod trace;
pub mod version;

pub use args::CniArgs;
pub use config::{Attachment, ConfList, NetConf};
pub use env::{Command, Env};
pub use error::{Code, Error, ResultExt};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use rollback::{Failures, Rollback};
pub use skel::{Plugin, Request};
