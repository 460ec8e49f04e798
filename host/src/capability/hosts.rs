//! Host patterns of `allowed_hosts` and `"http": {"allow": [...]}`, and which
//! addresses a request may connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a host pattern looks like, as a regular expression (for schemas):
/// an optional `*.`, DNS labels (IPv4 addresses among them), an optional
/// port. [`HostPattern::parse`] accepts exactly these, and IPv6 addresses
/// (`[::1]:8080`), which no regular expression of reasonable size describes.
pub const PATTERN: &str = r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$";

/// One allow-list entry: `api.example.com`, `*.stripe.com:443`,
/// `10.0.0.5:8080` or `[::1]:8080`. Without a port it allows the scheme's
/// default port (80 for http, 443 for https) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A name or address, compared whole.
    Exact(String),
    /// `*.suffix`: any name that ends with `.suffix`.
    Suffix(String),
}

impl HostPattern {
    /// Parses an entry; the error says what a host pattern looks like.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{entry:?} is not a host pattern ({why}): write a host name (api.example.com), \
                 a `*.` suffix (*.example.com), or an address (10.0.0.5), each with an optional :port"
            )
        };
        if entry.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = split_port(entry).map_err(&bad)?;
        let host = host.to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix("*.") {
            if !is_dns_name(suffix) {
                return Err(bad("`*.` must be followed by a host name"));
            }
            return Ok(Self {
                host: Host::Suffix(suffix.to_string()),
                port,
            });
        }
        if host.parse::<IpAddr>().is_err() && !is_dns_name(&host) {
            return Err(bad("a host name is letters, digits, `-` and dots"));
        }
        Ok(Self {
            host: Host::Exact(host),
            port,
        })
    }

    /// Does a request to `host:port` (the port given or the scheme's default) match?
    pub fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        let host = host.trim_end_matches('.');
        match &self.host {
            Host::Exact(h) => h.eq_ignore_ascii_case(host),
            Host::Suffix(s) => {
                host.len() > s.len() + 1
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
        }
    }

    /// Does this entry name the address `ip` literally (no wildcard), for `port`?
    pub fn names_address(&self, ip: IpAddr, port: u16, default_port: u16) -> bool {
        match &self.host {
            Host::Exact(h) => {
                h.parse::<IpAddr>()
                    .is_ok_and(|a| canonical(a) == canonical(ip))
                    && self.port.unwrap_or(default_port) == port
            }
            Host::Suffix(_) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Exact(h) if h.contains(':') => format!("[{h}]"),
            Host::Exact(h) => h.clone(),
            Host::Suffix(s) => format!("*.{s}"),
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// Parses every entry of a list, naming the first bad one.
pub fn parse_all(entries: &[String]) -> Result<Vec<HostPattern>, String> {
    entries.iter().map(|e| HostPattern::parse(e)).collect()
}

/// `host[:port]` or `[v6][:port]`.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), &'static str> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("the port is not a number from 1 to 65535")
    };
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("`[` without `]`")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("brackets hold an IPv6 address");
        }
        return match after {
            "" => Ok((host, None)),
            _ => Ok((
                host,
                Some(port(after.strip_prefix(':').ok_or("junk after `]`")?)?),
            )),
        };
    }
    if entry.parse::<Ipv6Addr>().is_ok() {
        return Ok((entry, None));
    }
    match entry.rsplit_once(':') {
        Some((host, p)) => Ok((host, Some(port(p)?))),
        None => Ok((entry, None)),
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Why `ip` is not a public address a step may reach by name, if it is not:
/// loopback, private, link-local (cloud metadata is 169.254.169.254),
/// unique-local, and the other ranges no public service lives in.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("the cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("a protocol-assignment address")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("the cloud metadata address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique-local address")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if first & 0xff00 == 0xff00 {
        Some("a multicast address")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 carries an IPv4 address in its last 32 bits.
        let [.., c, d] = ip.segments();
        restricted_v4(Ipv4Addr::from(((c as u32) << 16) | d as u32))
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("a documentation address")
    } else {
        None
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_host_and_port() {
        let cases = [
            ("api.example.com", "api.example.com", 443, 443, true),
            ("api.example.com", "API.example.com.", 443, 443, true),
            ("api.example.com", "api.example.com", 8443, 443, false),
            ("api.example.com", "evil.api.example.com", 443, 443, false),
            ("*.stripe.com:443", "api.stripe.com", 443, 443, true),
            ("*.stripe.com:443", "a.b.stripe.com", 443, 80, true),
            ("*.stripe.com:443", "stripe.com", 443, 443, false),
            ("*.stripe.com:443", "evilstripe.com", 443, 443, false),
            ("*.stripe.com:443", "api.stripe.com", 80, 80, false),
            ("10.0.0.5:8080", "10.0.0.5", 8080, 80, true),
            ("10.0.0.5:8080", "10.0.0.5", 80, 80, false),
            ("[::1]:8080", "::1", 8080, 80, true),
            ("::1", "::1", 80, 80, true),
        ];
        for (pattern, host, port, default, want) in cases {
            assert_eq!(
                p(pattern).matches(host, port, default),
                want,
                "{pattern} vs {host}:{port}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_shape_of_a_good_one() {
        for bad in [
            "",
            "http://x.com",
            "x.com/path",
            "*",
            "*.",
            "a..b",
            "x.com:0",
            "x.com:99999",
            "[::1",
            "[nope]:80",
            "-x.com",
            "x y.com",
        ] {
            let err = HostPattern::parse(bad).unwrap_err();
            assert!(err.contains("host pattern"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_schema_pattern_and_the_parser_agree() {
        // Hand-picked edges of the grammar, accepted or refused by both.
        let regex = regex_lite(PATTERN);
        for entry in [
            "a",
            "A.b",
            "x_y.z",
            "a-b.c",
            "*.a",
            "1.2.3.4",
            "*.1.2.3.4",
            "a:1",
            "a:65535",
            "a:0",
            "a:65536",
            "-a",
            "a-",
            "a..b",
            "a.",
            "*",
            "*.",
            "a b",
            "a/b",
            "",
            "[x]",
            "[::1",
            "http://a",
        ] {
            assert_eq!(
                regex(entry),
                HostPattern::parse(entry).is_ok(),
                "{entry:?}: the schema and the parser disagree"
            );
        }
        // IPv6, beyond the expression: the parser alone decides.
        assert!(!regex("[::1]:8080") && HostPattern::parse("[::1]:8080").is_ok());
    }

    /// The schema's pattern, checked with the workflow schema's JSON Schema
    /// validator (the one requests are checked with).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let validator = jsonschema::validator_for(&schema).expect("a valid pattern");
        move |s: &str| validator.is_valid(&serde_json::json!(s))
    }

    #[test]
    fn patterns_print_as_written() {
        for s in [
            "api.example.com",
            "*.stripe.com:443",
            "10.0.0.5:8080",
            "[::1]:80",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn only_a_literal_address_names_an_address() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p("127.0.0.1:8080").names_address(ip, 8080, 80));
        assert!(!p("127.0.0.1:8080").names_address(ip, 9090, 80));
        assert!(!p("localhost:8080").names_address(ip, 8080, 80));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(p("127.0.0.1:8080").names_address(mapped, 8080, 80));
    }

    #[test]
    fn internal_ranges_are_restricted_and_public_ones_are_not() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert_eq!(restricted(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
