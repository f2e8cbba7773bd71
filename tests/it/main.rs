//! One integration binary: real listeners on 127.0.0.1:0, real TLS, certificates minted per test.

mod audit;
mod audit_proof;
mod canonical;
mod check;
mod cli;
mod crl_files;
mod faults;
mod grpc;
mod hop_cache;
mod hostile;
mod identity;
mod idle;
mod intermediary;
mod logvolume;
mod mtls;
mod operator;
mod ops;
mod policy;
mod posture;
mod posture_mtls;
mod profile;
mod proxy;
mod revocation;
mod shutdown;
mod support;
mod trust;
