//! Route selection: host (exact or `*.suffix`) and the longest segment-aware path prefix.

use super::{Pins, RouteConfig, UserMode};

#[derive(Debug)]
pub struct Route {
    pub name: String,
    host: Option<String>,
    prefix: String,
    pub upstream: usize,
    pub rate_limit: Option<crate::ratelimit::Rate>,
    pub pins: Option<Pins>,
    pub user: UserMode,
    pub request_timeout: Option<Option<std::time::Duration>>,
    pub path_parameters: crate::policy::path::PathParameters,
    pub buffer_request_body: Option<u64>,
}

#[derive(Debug)]
pub struct RouteTable {
    /// Sorted so that the first match is the best: host-specific before any-host, then longest
    /// prefix first.
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(cfg: &[RouteConfig]) -> Self {
        let mut routes: Vec<Route> = cfg
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                host: r.host.clone(),
                prefix: r.path_prefix.clone(),
                upstream: r.upstream,
                rate_limit: r.rate_limit,
                pins: r.pins.clone(),
                user: r.user,
                request_timeout: r.request_timeout,
                path_parameters: r.path_parameters,
                buffer_request_body: r.buffer_request_body,
            })
            .collect();
        routes.sort_by(|a, b| {
            let specificity = |r: &Route| match &r.host {
                Some(h) if !h.starts_with("*.") => 2,
                Some(_) => 1,
                None => 0,
            };
            specificity(b)
                .cmp(&specificity(a))
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        Self { routes }
    }

    /// Index of the best route for `host` and `path`; see [`RouteTable::get`].
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| host_matches(r.host.as_deref(), host) && prefix_matches(&r.prefix, path))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// Per-route rate limits in table order.
    pub fn rate_limits(&self) -> Vec<Option<crate::ratelimit::Rate>> {
        self.routes.iter().map(|r| r.rate_limit).collect()
    }

    /// Route names in table order (the order of [`RouteTable::find`]'s indexes).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str())
    }
}

fn host_matches(pattern: Option<&str>, host: Option<&str>) -> bool {
    match (pattern, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(h)) => match p.strip_prefix("*.") {
            Some(suffix) => {
                h.len() > suffix.len() + 1 && h.ends_with(suffix) && h.as_bytes()[h.len() - suffix.len() - 1] == b'.'
            }
            None => p == h,
        },
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            upstream: 0,
            rate_limit: None,
            pins: None,
            user: UserMode::Off,
            request_timeout: None,
            path_parameters: crate::policy::path::PathParameters::Refuse,
            buffer_request_body: None,
        }
    }

    #[test]
    fn most_specific_host_then_longest_prefix_wins() {
        let t = RouteTable::new(&[
            route("default", None, "/"),
            route("api", None, "/api"),
            route("api-v2", None, "/api/v2"),
            route("wild", Some("*.internal"), "/"),
            route("billing", Some("billing.internal"), "/"),
        ]);
        let pick = |h: Option<&str>, p: &str| t.find(h, p).and_then(|i| t.get(i)).map(|r| r.name.as_str());
        assert_eq!(pick(None, "/"), Some("default"));
        assert_eq!(pick(None, "/api"), Some("api"));
        assert_eq!(pick(None, "/api/v2/x"), Some("api-v2"));
        assert_eq!(pick(None, "/apix"), Some("default"));
        assert_eq!(pick(Some("billing.internal"), "/api"), Some("billing"));
        assert_eq!(pick(Some("x.internal"), "/"), Some("wild"));
        assert_eq!(pick(Some("internal"), "/"), Some("default"));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let t = RouteTable::new(&[route("api", Some("api.internal"), "/api")]);
        assert!(t.find(Some("api.internal"), "/other").is_none());
        assert!(t.find(Some("web.internal"), "/api").is_none());
        assert!(t.find(None, "/api").is_none());
    }
}
