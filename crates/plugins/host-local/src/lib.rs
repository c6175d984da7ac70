//! host-local's parts, as a library so the fuzz targets and tests can reach the store reader and
//! the config parser directly; `main.rs` is the plugin.

pub mod allocator;
pub mod config;
pub mod dns;
pub mod range;
pub mod store;
