//! Wall 6, `net.mode = "proxy"`: which destinations the supervisor's proxy
//! may connect a sandbox to (`net.allow`), as data, and the decision for one
//! request. Pure: no sockets, no name resolution (the proxy resolves and
//! passes the addresses in).
//!
//! An entry is `HOST:PORT`, the port always given:
//! - a name, `api.internal.example:443` (exactly that name);
//! - a wildcard suffix, `*.docs.example:443` (any name ending in
//!   `.docs.example`, not `docs.example` itself);
//! - an address, `10.1.2.3:8080` or `[fd00::1]:443`;
//! - a network, `10.1.0.0/16:5432` or `[fd00::/64]:443`.
//!
//! A request for a name is decided by the name entries before anything is
//! resolved (a name not listed costs no DNS query). A request for an address
//! is decided by the address and network entries only. A name reached
//! through a wildcard may resolve only to public addresses, unless the
//! address is listed itself: a wildcard must not become a way to the host's
//! own services by DNS (rebinding). A name listed exactly is the admin's
//! word for that host, private addresses included (`localhost:5432`,
//! `db.internal:5432`).

use std::net::IpAddr;

use serde::Serialize;

/// The port the proxy listens on inside the sandbox (on its own loopback;
/// Squid's port, which clients and people recognise).
pub const PROXY_PORT: u16 = 3128;

/// Most entries one profile may list.
pub const MAX_RULES: usize = 256;

/// What one entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Target {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Any name ending in `.` + this suffix.
    Suffix(String),
    /// This address.
    Address(IpAddr),
    /// Addresses of this network (the address has no bits past the prefix).
    Network(IpAddr, u8),
}

/// One `net.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// What host it matches.
    pub target: Target,
    /// The one port it matches.
    pub port: u16,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Name(n) => write!(f, "{n}:{}", self.port),
            Target::Suffix(s) => write!(f, "*.{s}:{}", self.port),
            Target::Address(IpAddr::V4(a)) => write!(f, "{a}:{}", self.port),
            Target::Address(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Target::Network(IpAddr::V4(a), p) => write!(f, "{a}/{p}:{}", self.port),
            Target::Network(IpAddr::V6(a), p) => write!(f, "[{a}/{p}]:{}", self.port),
        }
    }
}

const GRAMMAR: &str = "valid: \"HOST:PORT\" with HOST a name (api.example), a wildcard suffix \
                       (*.docs.example), an address (10.1.2.3, [fd00::1]) or a network (10.1.0.0/16, \
                       [fd00::/64]), and PORT from 1 to 65535";

impl Rule {
    /// Parses one entry; the message says what is valid.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("has a '[' without ']'; {GRAMMAR}"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("has no port; {GRAMMAR}"))?;
            (inner, port)
        } else {
            match t.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!("an IPv6 address needs brackets, [addr]:port; {GRAMMAR}"));
                }
                Some((h, p)) => (h, p),
                None => return Err(format!("has no port; {GRAMMAR}")),
            }
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port {port:?} is not a port; {GRAMMAR}")),
        };
        Ok(Rule {
            target: parse_host(host)?,
            port,
        })
    }

    /// Whether this entry (of a parent) allows everything `other` (of a
    /// child) allows: same port, and a host set that contains the other's.
    pub fn covers(&self, other: &Rule) -> bool {
        if self.port != other.port {
            return false;
        }
        match (&self.target, &other.target) {
            (Target::Name(a), Target::Name(b)) => a == b,
            (Target::Suffix(a), Target::Name(b)) => under(b, a),
            (Target::Suffix(a), Target::Suffix(b)) => a == b || under(b, a),
            (Target::Address(a), Target::Address(b)) => a == b,
            (Target::Network(n, p), Target::Address(b)) => in_network(*b, *n, *p),
            (Target::Network(n, p), Target::Network(m, q)) => q >= p && in_network(*m, *n, *p),
            _ => false,
        }
    }
}

fn parse_host(host: &str) -> Result<Target, String> {
    if host.is_empty() {
        return Err(format!("has no host; {GRAMMAR}"));
    }
    if let Some((addr, prefix)) = host.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an address (a network is ADDRESS/PREFIX); {GRAMMAR}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("prefix {prefix:?} is not from 0 to {max}; {GRAMMAR}")),
        };
        if mask(addr, prefix) != addr {
            return Err(format!(
                "{host} has bits set past the prefix; valid: {}/{prefix}",
                mask(addr, prefix)
            ));
        }
        if prefix == 0 {
            return Err("a network of every address is not an allowlist; valid: list the networks you mean".into());
        }
        return Ok(Target::Network(addr, prefix));
    }
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Ok(Target::Address(addr));
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !is_hostname(&name) {
        return Err(format!(
            "{host:?} is not a host name (letters, digits, '-' and '.', a '*.' only in front); {GRAMMAR}"
        ));
    }
    if wild && !name.contains('.') {
        return Err(format!(
            "\"*.{name}\" would match every name under a top-level domain; valid: a suffix with at least two labels, such as *.docs.example"
        ));
    }
    Ok(if wild { Target::Suffix(name) } else { Target::Name(name) })
}

/// A DNS name: labels of letters, digits and inner hyphens (underscores
/// accepted, as service names use them), at most 253 characters, the last
/// label not all digits (`10.1`, `127.1` are addresses to the resolver,
/// which reads them as 10.0.0.1 and 127.0.0.1: never a name here).
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name
            .rsplit('.')
            .next()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
        && name.len() <= 253
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

/// Whether `name` is a strict subdomain of `suffix`.
fn under(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .and_then(|head| head.strip_suffix('.'))
        .is_some_and(|head| !head.is_empty())
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

fn in_network(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    addr.is_ipv4() == net.is_ipv4() && mask(addr, prefix) == net
}

/// An address of IPv4 in IPv6 clothing (`::ffff:a.b.c.d`) is judged as the
/// IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an address is not on the public internet: loopback, private,
/// link-local, shared (CGNAT), unique-local, unspecified, multicast,
/// broadcast, documentation or reserved. A wildcard entry never reaches
/// these by name.
pub fn is_internal(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o0 == 0
                || (o0 == 100 && (64..128).contains(&o1))
                || o0 >= 240
                || (o0 == 192 && o1 == 0)
                || (o0 == 198 && (18..20).contains(&o1))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// No entry names this host and port.
    NotAllowed,
    /// The name was allowed by a wildcard, and resolved only to internal
    /// addresses that are not listed.
    InternalAddress,
    /// The name did not resolve.
    Unresolved,
    /// No address it resolved to could be connected to.
    Unreachable,
    /// The TLS server name of a `CONNECT` is not the host asked for.
    SniMismatch,
    /// The request was not one the proxy speaks.
    BadRequest,
    /// `limits.connections` were already made.
    ConnectionLimit,
}

impl Refusal {
    /// The words of the record and the proxy's answer.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not in net.allow",
            Refusal::InternalAddress => {
                "resolved to an internal address (loopback, private, link-local) that net.allow does not list"
            }
            Refusal::Unresolved => "the name does not resolve",
            Refusal::Unreachable => "no address of it accepted the connection",
            Refusal::SniMismatch => "the TLS server name is not the host of the CONNECT",
            Refusal::BadRequest => "not an HTTP proxy or SOCKS5 request",
            Refusal::ConnectionLimit => "limits.connections reached",
        }
    }
}

/// A host as a client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A name, lower case, no trailing dot.
    Name(String),
    /// An address literal.
    Address(IpAddr),
}

impl Host {
    /// Parses what a client sent (`[::1]` brackets allowed); `None` when it
    /// is neither an address nor a host name.
    pub fn parse(text: &str) -> Option<Host> {
        let t = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        if let Ok(a) = t.parse::<IpAddr>() {
            return Some(Host::Address(canonical(a)));
        }
        let name = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
        is_hostname(&name).then_some(Host::Name(name))
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Address(a) => write!(f, "{a}"),
        }
    }
}

/// The first decision, before any resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// An address literal a rule lists: connect to it.
    Address,
    /// A name listed exactly: resolve, every address allowed.
    Exact,
    /// A name under a wildcard: resolve, internal addresses only if listed.
    Wildcard,
}

/// Decides a request for `host:port` before resolution.
pub fn admit(rules: &[Rule], host: &Host, port: u16) -> Result<Admitted, Refusal> {
    let on_port = rules.iter().filter(|r| r.port == port);
    match host {
        Host::Address(a) => on_port
            .clone()
            .any(|r| address_listed(r, *a))
            .then_some(Admitted::Address)
            .ok_or(Refusal::NotAllowed),
        Host::Name(n) => {
            let mut best = None;
            for r in on_port {
                match &r.target {
                    Target::Name(x) if x == n => return Ok(Admitted::Exact),
                    Target::Suffix(s) if under(n, s) => best = Some(Admitted::Wildcard),
                    _ => {}
                }
            }
            best.ok_or(Refusal::NotAllowed)
        }
    }
}

fn address_listed(rule: &Rule, addr: IpAddr) -> bool {
    let addr = canonical(addr);
    match rule.target {
        Target::Address(a) => canonical(a) == addr,
        Target::Network(n, p) => in_network(addr, n, p),
        _ => false,
    }
}

/// Of the addresses a name resolved to, those the proxy may connect to,
/// in the resolver's order.
pub fn usable(rules: &[Rule], admitted: Admitted, port: u16, addrs: &[IpAddr]) -> Vec<IpAddr> {
    addrs
        .iter()
        .map(|a| canonical(*a))
        .filter(|a| {
            admitted != Admitted::Wildcard
                || !is_internal(*a)
                || rules.iter().any(|r| r.port == port && address_listed(r, *a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|t| Rule::parse(t).unwrap()).collect()
    }

    #[test]
    fn the_grammar_takes_names_wildcards_addresses_and_networks_and_says_the_fix() {
        for (text, shown) in [
            ("API.Example.:443", "api.example:443"),
            ("*.docs.example:443", "*.docs.example:443"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("[fd00::1]:443", "[fd00::1]:443"),
            ("10.1.0.0/16:5432", "10.1.0.0/16:5432"),
            ("[fd00::/64]:443", "[fd00::/64]:443"),
            ("localhost:5432", "localhost:5432"),
        ] {
            assert_eq!(Rule::parse(text).unwrap().to_string(), shown);
        }
        for (text, says) in [
            ("api.example", "has no port"),
            ("api.example:0", "is not a port"),
            ("api.example:http", "is not a port"),
            ("fd00::1:443", "needs brackets"),
            ("10.1.2.3/16:80", "valid: 10.1.0.0/16"),
            ("0.0.0.0/0:443", "every address"),
            ("*.com:443", "top-level"),
            ("a.*.example:443", "not a host name"),
            ("exa mple:443", "not a host name"),
            (":443", "no host"),
            ("10.0.0.0/33:1", "prefix"),
            ("127.1:80", "not a host name"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn names_are_decided_before_resolution_and_wildcards_never_reach_internal_addresses() {
        let r = rules(&[
            "api.example:443",
            "*.docs.example:443",
            "10.1.0.0/16:5432",
            "localhost:5432",
        ]);
        let name = |n: &str| Host::parse(n).unwrap();
        assert_eq!(admit(&r, &name("API.example."), 443), Ok(Admitted::Exact));
        assert_eq!(admit(&r, &name("api.example"), 80), Err(Refusal::NotAllowed));
        assert_eq!(admit(&r, &name("a.docs.example"), 443), Ok(Admitted::Wildcard));
        assert_eq!(admit(&r, &name("docs.example"), 443), Err(Refusal::NotAllowed));
        assert_eq!(admit(&r, &name("evildocs.example"), 443), Err(Refusal::NotAllowed));
        assert_eq!(admit(&r, &name("10.1.200.3"), 5432), Ok(Admitted::Address));
        assert_eq!(admit(&r, &name("[::ffff:10.1.2.3]"), 5432), Ok(Admitted::Address));
        assert_eq!(admit(&r, &name("10.2.0.1"), 5432), Err(Refusal::NotAllowed));
        // What the resolver would read as an address is no name.
        assert_eq!(Host::parse("127.1"), None);
        assert_eq!(Host::parse("10.0.1"), None);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let listed: IpAddr = "10.1.9.9".parse().unwrap();
        assert_eq!(usable(&r, Admitted::Wildcard, 443, &[lo, public]), vec![public]);
        assert_eq!(usable(&r, Admitted::Exact, 5432, &[lo]), vec![lo]);
        assert_eq!(usable(&r, Admitted::Wildcard, 5432, &[listed, lo]), vec![listed]);
        for internal in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_parent_entry_covers_only_what_is_inside_it() {
        let p = |t: &str| Rule::parse(t).unwrap();
        assert!(p("*.corp.example:443").covers(&p("api.corp.example:443")));
        assert!(p("*.corp.example:443").covers(&p("*.docs.corp.example:443")));
        assert!(!p("*.docs.corp.example:443").covers(&p("*.corp.example:443")));
        assert!(!p("*.corp.example:443").covers(&p("api.corp.example:80")));
        assert!(!p("*.corp.example:443").covers(&p("corp.example:443")));
        assert!(!p("api.example:443").covers(&p("*.api.example:443")));
        assert!(p("10.0.0.0/8:80").covers(&p("10.1.0.0/16:80")));
        assert!(p("10.0.0.0/8:80").covers(&p("10.9.9.9:80")));
        assert!(!p("10.1.0.0/16:80").covers(&p("10.0.0.0/8:80")));
        assert!(!p("10.0.0.0/8:80").covers(&p("api.example:80")));
    }
}
