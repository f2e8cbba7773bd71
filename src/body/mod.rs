//! Body types of the data path: what ztgate answers with ([`ProxyBody`]) and the
//! `request_timeout` deadline that bounds a whole exchange ([`Deadline`]).

mod deadline;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub(crate) use deadline::{Deadline, DeadlineExceeded, Side};

/// Body of every response ztgate sends: the upstream's streamed body (under the request's
/// deadline), or a short one of ztgate's own (errors, health).
pub(crate) type ProxyBody = Either<Deadline<Incoming>, Full<Bytes>>;

/// The boxed error type of bodies and connectors (hyper's convention).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
