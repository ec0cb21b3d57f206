//! Where deliveries may go. Every target URL is checked when it is registered and again, at
//! send time, against the addresses the HTTP client actually connects to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// The longest target URL accepted, in characters.
pub const MAX_URL_LEN: usize = 2048;

/// What the operator allows beyond public HTTPS endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// `ALLOW_HTTP_TARGETS`: plain `http://` URLs.
    pub allow_http: bool,
    /// `ALLOW_PRIVATE_TARGETS`: loopback, private, link-local, CGNAT, metadata… addresses.
    pub allow_private: bool,
}

impl TargetPolicy {
    pub const PERMISSIVE: TargetPolicy = TargetPolicy {
        allow_http: true,
        allow_private: true,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute URL ({0})")]
    Malformed(String),
    #[error("must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("must use https")]
    Scheme,
    #[error("scheme '{0}' is not supported; use https")]
    UnsupportedScheme(String),
    #[error("must not contain credentials (user:password@)")]
    Credentials,
    #[error("must have a host")]
    NoHost,
    #[error("target not allowed: {addr} is a {reason} address")]
    Blocked { addr: IpAddr, reason: &'static str },
    #[error("target not allowed: '{host}' is a {reason} name")]
    BlockedName { host: String, reason: &'static str },
}

impl TargetError {
    /// Logs the operator setting that would allow a refused target. Callers see only the
    /// reason: the service's settings are the operator's business, not a client's hint.
    pub fn log_setting(&self, target: &str) {
        let setting = match self {
            TargetError::Scheme => "ALLOW_HTTP_TARGETS",
            TargetError::Blocked { .. } | TargetError::BlockedName { .. } => "ALLOW_PRIVATE_TARGETS",
            _ => return,
        };
        tracing::info!(target_url = %target, setting, error = %self, "target refused; the setting named allows it");
    }
}

/// Why `ip` must not be a delivery target, or `None` when it is a public unicast address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let reason = match o {
        [169, 254, 169, 254] => "cloud metadata",
        [100, 100, 100, 200] => "cloud metadata",
        [0, ..] => "unspecified ('this network')",
        [127, ..] => "loopback",
        [10, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [192, 168, ..] => "private",
        [100, b, ..] if (64..128).contains(&b) => "CGNAT (shared address space)",
        [169, 254, ..] => "link-local",
        [192, 0, 0, _] => "reserved (IETF protocol assignments)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, 18 | 19, ..] => "reserved (benchmarking)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    };
    Some(reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    // Addresses that carry an IPv4 address are judged by it: IPv4-mapped (::ffff:a.b.c.d),
    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::).
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            return forbidden_v4(embedded(hi, lo));
        }
        [0x2002, hi, lo, ..] => return forbidden_v4(embedded(hi, lo)),
        _ => {}
    }
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some("cloud metadata");
    }
    let reason = match s[0] {
        x if x & 0xfe00 == 0xfc00 => "private (unique local)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        // Teredo hides the real IPv4 address; no webhook receiver needs it.
        0x2001 if s[1] == 0 => "Teredo tunnel",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        _ => return None,
    };
    Some(reason)
}

/// Checks everything about a target URL that needs no DNS: syntax, length, scheme,
/// credentials, and hosts that are IP literals (in any spelling the URL standard accepts,
/// such as `2130706433`, `0x7f.1` or `[::ffff:127.0.0.1]`) or `localhost` names.
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<Url, TargetError> {
    if raw.chars().count() > MAX_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw).map_err(|e| TargetError::Malformed(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(TargetError::Scheme),
        other => return Err(TargetError::UnsupportedScheme(other.to_string())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    match url.host() {
        None => return Err(TargetError::NoHost),
        Some(Host::Domain("")) => return Err(TargetError::NoHost),
        Some(_) if policy.allow_private => {}
        Some(Host::Ipv4(v4)) => check_ip(IpAddr::V4(v4))?,
        Some(Host::Ipv6(v6)) => check_ip(IpAddr::V6(v6))?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(TargetError::BlockedName {
                    host: name,
                    reason: "loopback",
                });
            }
        }
    }
    Ok(url)
}

pub fn check_ip(ip: IpAddr) -> Result<(), TargetError> {
    match forbidden_reason(ip) {
        Some(reason) => Err(TargetError::Blocked { addr: ip, reason }),
        None => Ok(()),
    }
}

/// Refuses the whole answer when any address is forbidden: a name that mixes public and
/// private addresses is a rebinding attempt, not a receiver.
pub fn check_addrs(addrs: &[SocketAddr]) -> Result<(), TargetError> {
    addrs.iter().try_for_each(|a| check_ip(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_http: false,
        allow_private: false,
    };

    fn blocked(url: &str) -> bool {
        matches!(
            check_url(
                url,
                TargetPolicy {
                    allow_http: true,
                    allow_private: false
                }
            ),
            Err(TargetError::Blocked { .. } | TargetError::BlockedName { .. })
        )
    }

    #[test]
    fn refuses_private_addresses_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.100.100.200/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[fd00:ec2::254]/",
            "http://[fc00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(blocked(url), "{url} should be refused");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        for url in [
            "https://example.com/hook",
            "https://93.184.216.34/",
            "https://[2606:4700::1111]/",
            "https://8.8.8.8:8443/x?y=1",
            "https://172.32.0.1/",
            "https://100.128.0.1/",
        ] {
            assert!(check_url(url, STRICT).is_ok(), "{url} should be accepted");
        }
    }

    #[test]
    fn scheme_length_and_credentials() {
        assert_eq!(check_url("http://example.com/", STRICT), Err(TargetError::Scheme));
        assert!(check_url("http://example.com/", TargetPolicy::PERMISSIVE).is_ok());
        assert!(matches!(
            check_url("ftp://example.com/", STRICT),
            Err(TargetError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            check_url("example.com", STRICT),
            Err(TargetError::Malformed(_))
        ));
        assert_eq!(
            check_url("https://u:p@example.com/", STRICT),
            Err(TargetError::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long, STRICT), Err(TargetError::TooLong));
        assert!(check_url("http://127.0.0.1:9/", TargetPolicy::PERMISSIVE).is_ok());
    }
}
