//! etcd's URL flags: comma-separated lists of `http(s)://host:port`, checked as etcd 3.4's
//! `types.NewURLs` checks them, and listen URLs turned into socket addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::ConfigError;

/// How a URL is served: plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`: plain TCP (for gRPC: h2c).
    Http,
    /// `https://`: TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address to listen on, from a listen URL flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenUrl {
    /// Plain or TLS.
    pub scheme: Scheme,
    /// The address to bind (`localhost` is 127.0.0.1, as etcd binds it).
    pub addr: SocketAddr,
    /// The URL as given (scheme lower-cased), for logs and errors.
    pub url: String,
}

/// A URL split into its parts; `host` keeps IPv6 brackets off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The URL as etcd prints it after parsing: trimmed, scheme lower-cased.
    pub(crate) url: String,
}

/// Parses one URL of flag `flag` as etcd does (`http` or `https`, `host:port`, no path), with
/// stricter rules where etcd would only fail later: the port must be a number in 0..=65535,
/// and user info, queries and fragments are refused rather than ignored.
pub(crate) fn parse_url(flag: &'static str, raw: &str) -> Result<ParsedUrl, ConfigError> {
    let trimmed = raw.trim();
    let bad = |reason: &str| ConfigError::InvalidUrl {
        flag,
        url: trimmed.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((scheme_text, rest)) = trimmed.split_once("://") else {
        return Err(bad("URL scheme must be http or https"));
    };
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "unix" | "unixs" => {
            return Err(bad("unix sockets are not supported; use http or https"));
        }
        _ => return Err(bad("URL scheme must be http or https")),
    };
    if rest.contains(['/', '?', '#']) {
        return Err(bad("URL must not contain a path"));
    }
    if rest.contains('@') {
        return Err(bad("URL must not contain user information"));
    }
    let (host, port_text) = split_host_port(rest)
        .ok_or_else(|| bad("URL address does not have the form \"host:port\""))?;
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|_| port_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| bad("the port must be a number from 0 to 65535"))?;
    Ok(ParsedUrl {
        scheme,
        host: host.to_owned(),
        port,
        url: format!("{}://{rest}", scheme.as_str()),
    })
}

/// Splits `host:port` as Go's `net.SplitHostPort`: an IPv6 host is bracketed, any other host
/// has no colon.
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = authority.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Parses a comma-separated URL list flag; empty items are skipped and repeated URLs kept
/// once, as etcd's unique-URL flags do. Every URL must have a host.
pub(crate) fn parse_url_list(
    flag: &'static str,
    value: &str,
) -> Result<Vec<ParsedUrl>, ConfigError> {
    let mut urls: Vec<ParsedUrl> = Vec::new();
    for item in value.split(',').filter(|item| !item.trim().is_empty()) {
        let url = parse_url(flag, item)?;
        if url.host.is_empty() {
            return Err(ConfigError::InvalidUrl {
                flag,
                url: url.url,
                reason: "unexpected empty host".to_owned(),
            });
        }
        if !urls.iter().any(|seen| seen.url == url.url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        return Err(ConfigError::NoUrls {
            flag,
            value: value.to_owned(),
        });
    }
    Ok(urls)
}

/// Parses a listen URL list: each host must be an IP address or `localhost` (etcd's
/// `checkBindURLs`), so what is bound never depends on a resolver.
pub(crate) fn parse_listen_urls(
    flag: &'static str,
    value: &str,
) -> Result<Vec<ListenUrl>, ConfigError> {
    parse_url_list(flag, value)?
        .into_iter()
        .map(|url| {
            let ip = if url.host == "localhost" {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                url.host
                    .parse::<IpAddr>()
                    .map_err(|_| ConfigError::ListenHostNotIp {
                        flag,
                        url: url.url.clone(),
                    })?
            };
            Ok(ListenUrl {
                scheme: url.scheme,
                addr: SocketAddr::new(ip, url.port),
                url: url.url,
            })
        })
        .collect()
}

/// The address to dial for a peer or client URL such as `http://node1.example:2380`:
/// `localhost` is 127.0.0.1, an IP address is itself, any other name goes through the system
/// resolver (its first IPv4 answer, else its first answer).
///
/// # Errors
///
/// [`ConfigError::InvalidUrl`] for a URL etcd would refuse, [`ConfigError::Unresolvable`] for
/// a name the resolver does not know.
pub fn resolve_url(url: &str) -> Result<SocketAddr, ConfigError> {
    let parsed = parse_url("url", url)?;
    if parsed.host == "localhost" {
        return Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            parsed.port,
        ));
    }
    if let Ok(ip) = parsed.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, parsed.port));
    }
    let unresolvable = |reason: String| ConfigError::Unresolvable {
        url: parsed.url.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| unresolvable(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| unresolvable("no address".to_owned()))
}

/// The host name a URL gives, `None` when it gives an IP address: what a peer's certificate
/// must name when it is dialed by that URL.
pub fn url_host_name(url: &str) -> Option<String> {
    let parsed = parse_url("url", url).ok()?;
    parsed
        .host
        .parse::<IpAddr>()
        .is_err()
        .then_some(parsed.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_url_accepts_etcd_forms_and_lowercases_the_scheme() {
        let url = parse_url("f", " HTTP://127.0.0.1:2379 ").expect("valid");
        assert_eq!(url.url, "http://127.0.0.1:2379");
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port),
            (Scheme::Http, "127.0.0.1", 2379)
        );
        let v6 = parse_url("f", "https://[::1]:2380").expect("valid");
        assert_eq!(
            (v6.scheme, v6.host.as_str(), v6.port),
            (Scheme::Https, "::1", 2380)
        );
    }

    #[test]
    fn parse_url_refuses_what_etcd_refuses_with_etcds_reason() {
        for (raw, reason) in [
            ("ftp://a:1", "scheme must be http or https"),
            ("localhost:2379", "scheme must be http or https"),
            ("unix://sock:0", "unix sockets are not supported"),
            ("http://localhost", "does not have the form \"host:port\""),
            ("http://::1:2379", "does not have the form \"host:port\""),
            ("http://localhost:2379/path", "must not contain a path"),
            ("http://localhost:2379/", "must not contain a path"),
            ("http://u@localhost:2379", "user information"),
            ("http://localhost:99999", "port must be a number"),
            ("http://localhost:", "port must be a number"),
            ("http://localhost:+1", "port must be a number"),
        ] {
            let err = parse_url("listen-client-urls", raw)
                .expect_err(raw)
                .to_string();
            assert!(err.contains(reason), "{raw}: {err}");
            assert!(err.contains("--listen-client-urls"), "{raw}: {err}");
        }
    }

    #[test]
    fn listen_hosts_must_be_ip_addresses_or_localhost() {
        let urls = parse_listen_urls("f", "http://localhost:1,https://0.0.0.0:2,http://[::1]:3")
            .expect("valid");
        let addrs: Vec<String> = urls.iter().map(|u| u.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "0.0.0.0:2", "[::1]:3"]);
        assert_eq!(urls[1].scheme, Scheme::Https);
        let err = parse_listen_urls("f", "http://example.invalid:1").expect_err("a name");
        assert!(matches!(err, ConfigError::ListenHostNotIp { .. }), "{err}");
    }

    #[test]
    fn url_lists_skip_empty_items_and_repeats_but_not_empty_hosts() {
        let urls = parse_url_list("f", "http://a:1, http://a:1,,http://b:2").expect("valid");
        let urls: Vec<&str> = urls.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["http://a:1", "http://b:2"]);
        assert!(matches!(
            parse_url_list("f", " , "),
            Err(ConfigError::NoUrls { .. })
        ));
        let err = parse_url_list("f", "http://:2379")
            .expect_err("empty host")
            .to_string();
        assert!(err.contains("unexpected empty host"), "{err}");
    }

    #[test]
    fn resolve_url_maps_localhost_and_ips_and_refuses_unknown_names() {
        assert_eq!(
            resolve_url("http://localhost:2380")
                .expect("localhost")
                .to_string(),
            "127.0.0.1:2380"
        );
        assert_eq!(
            resolve_url("https://[::1]:7").expect("ip").to_string(),
            "[::1]:7"
        );
        // `.invalid` is reserved (RFC 6761): no resolver may answer for it.
        let err = resolve_url("http://no-such-host.invalid:2380").expect_err("unknown name");
        assert!(matches!(err, ConfigError::Unresolvable { .. }), "{err}");
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
}
