//! Importers: other proxies' configuration files translated into the gateway's spec.

pub mod nginx;
