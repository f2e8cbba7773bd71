//! ztgate: an identity-aware mTLS reverse proxy. See DESIGN.md for the map of the crate.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod anomaly;
pub mod app;
pub mod audit;
mod body;
mod canonical;
pub mod cli;
mod cluster_limit;
pub mod config;
mod ctx;
pub mod demo;
mod diag;
mod error;
mod headers;
pub mod identity;
mod jwt;
mod middleware;
pub mod pki;
pub mod policy;
pub mod posture;
mod ratelimit;
mod reload;
pub mod server;
mod telemetry;
pub mod tls;
mod upstream;
mod user;
