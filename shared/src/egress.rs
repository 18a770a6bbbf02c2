//! Where outbound requests of jobs may go. A `webhook` job's URL comes from a user, so without
//! a policy it could reach the network the worker runs in: the database, the broker's
//! management API, a cloud metadata endpoint (169.254.169.254). The policy is checked against
//! the addresses the host resolves to (not the name), for every hop of a redirect, and the
//! request then connects to exactly the addresses checked (no second lookup to rebind).
//!
//! An address is reachable when it is public, or inside an address or block listed in
//! `jobs.webhook_allow_hosts`, or non-public with `jobs.webhook_allow_private`. Unspecified,
//! multicast and broadcast addresses are never reachable. IPv6 forms that embed an IPv4
//! address (mapped, compatible, NAT64, 6to4) are judged by that address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::JobSettings;

/// What kind of address this is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16).
    Private,
    /// 169.254/16, fe80::/10: where cloud metadata services live.
    LinkLocal,
    /// 100.64/10, the carrier-grade NAT space.
    SharedNat,
    /// fc00::/7 (and the deprecated site-local fec0::/10).
    UniqueLocal,
    /// Documentation, benchmarking, protocol assignments, 240/4, discard-only...
    Reserved,
    /// 0.0.0.0/8, `::`: connecting there reaches this machine.
    Unspecified,
    Multicast,
    Broadcast,
}

impl AddressClass {
    /// Never a destination, whatever the configuration says.
    fn never(self) -> bool {
        matches!(self, Self::Unspecified | Self::Multicast | Self::Broadcast)
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedNat => "shared (CGNAT)",
            Self::UniqueLocal => "unique local",
            Self::Reserved => "reserved",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
        })
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (100, 64..=127, _) => AddressClass::SharedNat,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _)
        | (192, 0, 0 | 2)
        | (192, 88, 99)
        | (198, 18..=19, _)
        | (198, 51, 100)
        | (203, 0, 113) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        classify_v4(Ipv4Addr::new(a, b, c, d))
    };
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        // NAT64 well-known and local-use prefixes: a gateway turns them into IPv4.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        [0x64, 0xff9b, 1, ..] => AddressClass::Reserved,
        // 6to4: the IPv4 address of the relay is bits 16..48.
        [0x2002, hi, lo, ..] => match embedded(hi, lo) {
            AddressClass::Public => AddressClass::Public,
            _ => AddressClass::Reserved,
        },
        [first, ..] if first & 0xff00 == 0xff00 => AddressClass::Multicast,
        [first, ..] if first & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => AddressClass::UniqueLocal,
        [first, ..] if first & 0xfe00 == 0xfc00 => AddressClass::UniqueLocal,
        // Documentation, discard-only, Teredo, ORCHID and benchmarking.
        [0x2001, 0x0db8, ..]
        | [0x0100, 0, 0, 0, ..]
        | [0x2001, 0, ..]
        | [0x2001, 0x10..=0x2f, ..]
        | [0x2001, 0x0002, 0, ..] => AddressClass::Reserved,
        // Only 2000::/3 is global unicast.
        [first, ..] if first & 0xe000 == 0x2000 => AddressClass::Public,
        _ => AddressClass::Reserved,
    }
}

/// An address block of the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    net: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:127.0.0.1` is `127.0.0.1` for the allow-list too.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Exact(String),
    /// `*.example.com`: any name under it (not `example.com` itself).
    Under(String),
}

/// A malformed `jobs.webhook_allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name, `*.domain`, an address or an address/prefix")]
pub struct BadEntry(pub String);

/// Why a destination is refused (the job fails for good with this as its error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{host} is not in jobs.webhook_allow_hosts")]
    HostNotAllowed { host: String },
    #[error(
        "{host} resolves to {ip}, a {class} address (allow it with jobs.webhook_allow_hosts or jobs.webhook_allow_private)"
    )]
    Address { host: String, ip: IpAddr, class: AddressClass },
    #[error("{host} resolves to {ip}, a {class} address, which is never a destination")]
    Never { host: String, ip: IpAddr, class: AddressClass },
}

/// The outbound policy of `webhook` jobs, from `[jobs]`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    names: Vec<Name>,
    blocks: Vec<Block>,
    allow_private: bool,
}

impl Policy {
    pub fn from_settings(jobs: &JobSettings) -> Result<Self, BadEntry> {
        Self::new(&jobs.webhook_allow_hosts, jobs.webhook_allow_private)
    }

    pub fn new(entries: &[String], allow_private: bool) -> Result<Self, BadEntry> {
        let mut policy = Self { allow_private, ..Self::default() };
        for entry in entries {
            let bad = || BadEntry(entry.clone());
            let entry_lc = entry.trim().to_ascii_lowercase();
            let bare = entry_lc.trim_start_matches('[').trim_end_matches(']');
            if let Some((net, prefix)) = bare.split_once('/') {
                let net: IpAddr = net.parse().map_err(|_| bad())?;
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                let max = if net.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(bad());
                }
                let block = match net {
                    // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                    IpAddr::V6(v6) if prefix >= 96 => {
                        v6.to_ipv4_mapped().map_or(Block { net, prefix }, |v4| Block {
                            net: v4.into(),
                            prefix: prefix - 96,
                        })
                    }
                    _ => Block { net, prefix },
                };
                policy.blocks.push(block);
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                let ip = canonical(ip);
                policy.blocks.push(Block { net: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } });
            } else if let Some(domain) = entry_lc.strip_prefix("*.") {
                policy.names.push(Name::Under(valid_name(domain).ok_or_else(bad)?));
            } else {
                policy.names.push(Name::Exact(valid_name(&entry_lc).ok_or_else(bad)?));
            }
        }
        Ok(policy)
    }

    fn restricts_hosts(&self) -> bool {
        !self.names.is_empty() || !self.blocks.is_empty()
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|rule| match rule {
            Name::Exact(name) => host == *name,
            Name::Under(domain) => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
        })
    }

    fn listed(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// May a request to `host` (a name, or an address literal) connect to `addrs`, what it
    /// resolved to? Every address must pass: a name that resolves to one public and one
    /// private address is refused, since the connection could take either.
    pub fn admit(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refusal> {
        let all_listed = !addrs.is_empty() && addrs.iter().all(|ip| self.listed(*ip));
        if self.restricts_hosts() && !self.name_allowed(host) && !all_listed {
            return Err(Refusal::HostNotAllowed { host: host.to_string() });
        }
        for ip in addrs {
            let class = classify(*ip);
            let host = host.to_string();
            if class.never() {
                return Err(Refusal::Never { host, ip: *ip, class });
            }
            if class != AddressClass::Public && !self.allow_private && !self.listed(*ip) {
                return Err(Refusal::Address { host, ip: *ip, class });
            }
        }
        Ok(())
    }
}

/// A lower-case DNS name: labels of letters, digits and `-`, at most 253 bytes.
fn valid_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s} is not an address"))
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        for (addr, class) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", SharedNat),
            ("100.128.0.1", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2606:4700::1111", Public),
            // IPv4 inside IPv6 is judged by the IPv4 address.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Loopback),
            ("64:ff9b::10.0.0.1", Private),
            ("64:ff9b::8.8.8.8", Public),
            ("2002:7f00:1::", Reserved),
            ("2002:0808:0808::", Public),
            ("4000::1", Reserved),
        ] {
            assert_eq!(classify(ip(addr)), class, "{addr}");
        }
    }

    fn policy(entries: &[&str], allow_private: bool) -> Policy {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Policy::new(&entries, allow_private).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn by_default_only_public_addresses_pass() {
        let p = policy(&[], false);
        assert_eq!(p.admit("example.com", &[ip("93.184.216.34")]), Ok(()));
        for bad in
            ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1"]
        {
            assert!(
                matches!(p.admit("h", &[ip(bad)]), Err(Refusal::Address { .. })),
                "{bad} passed"
            );
        }
        // One bad address among good ones is enough to refuse.
        assert!(p.admit("h", &[ip("8.8.8.8"), ip("10.0.0.1")]).is_err());
    }

    #[test]
    fn listed_addresses_and_blocks_pass_even_when_private() {
        let p = policy(&["127.0.0.1", "10.1.0.0/16"], false);
        assert_eq!(p.admit("127.0.0.1", &[ip("127.0.0.1")]), Ok(()));
        assert_eq!(p.admit("::ffff:127.0.0.1", &[ip("::ffff:127.0.0.1")]), Ok(()));
        assert_eq!(p.admit("internal", &[ip("10.1.200.3")]), Ok(()));
        // Another loopback address is not the listed one.
        assert!(matches!(
            p.admit("127.0.0.2", &[ip("127.0.0.2")]),
            Err(Refusal::HostNotAllowed { .. })
        ));
        // A list restricts the hosts: a public one not on it is refused too.
        assert!(matches!(
            p.admit("example.com", &[ip("8.8.8.8")]),
            Err(Refusal::HostNotAllowed { .. })
        ));
    }

    #[test]
    fn names_restrict_hosts_but_their_addresses_are_still_checked() {
        let p = policy(&["hooks.example.com", "*.partner.org"], false);
        assert_eq!(p.admit("hooks.example.com", &[ip("8.8.8.8")]), Ok(()));
        assert_eq!(p.admit("HOOKS.example.com.", &[ip("8.8.8.8")]), Ok(()));
        assert_eq!(p.admit("a.b.partner.org", &[ip("8.8.8.8")]), Ok(()));
        assert!(p.admit("partner.org", &[ip("8.8.8.8")]).is_err());
        assert!(p.admit("evilpartner.org", &[ip("8.8.8.8")]).is_err());
        assert!(p.admit("other.com", &[ip("8.8.8.8")]).is_err());
        // DNS that points an allowed name at the inside is refused.
        assert!(matches!(
            p.admit("hooks.example.com", &[ip("169.254.169.254")]),
            Err(Refusal::Address { .. })
        ));
    }

    #[test]
    fn allow_private_opens_non_public_addresses_but_never_unspecified_or_multicast() {
        let p = policy(&[], true);
        assert_eq!(p.admit("h", &[ip("10.0.0.1"), ip("127.0.0.1"), ip("fd00::1")]), Ok(()));
        assert!(matches!(p.admit("h", &[ip("0.0.0.0")]), Err(Refusal::Never { .. })));
        assert!(matches!(p.admit("h", &[ip("::")]), Err(Refusal::Never { .. })));
        assert!(matches!(p.admit("h", &[ip("224.0.0.1")]), Err(Refusal::Never { .. })));
        let listed = policy(&["0.0.0.0/0"], false);
        assert!(matches!(listed.admit("h", &[ip("0.0.0.0")]), Err(Refusal::Never { .. })));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in ["10.0.0.0/33", "::/129", "1.2.3.4/x", "*.", "a..b", "http://x", "*"] {
            assert!(Policy::new(&[entry.to_string()], false).is_err(), "{entry}");
        }
        assert!(Policy::new(&["[::1]".to_string(), "fe80::/10".to_string()], false).is_ok());
    }
}
