//! ztgate: an identity-aware mTLS reverse proxy. See DESIGN.md for the map of the crate.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod anomaly;
pub mod app;
pub mod audit;
pub mod body;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod demo;
pub mod diag;
pub mod error;
pub mod headers;
pub mod identity;
pub mod jwt;
pub mod middleware;
pub mod pki;
pub mod policy;
pub mod posture;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod user;
