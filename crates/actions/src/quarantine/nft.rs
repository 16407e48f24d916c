//! The Linux half of the quarantine: one nftables table of watchpost's own.
//!
//! The ruleset is a hand-written `nft` script, not the `nftables` crate's typed JSON: every
//! value in it is a parsed [`std::net::IpAddr`], a prefix length, a port number or the
//! table name checked against `[A-Za-z_][A-Za-z0-9_]*`, so nothing from the configuration
//! or an event can change the script's structure; the script is short, readable in a
//! golden test and in `watchpost quarantine apply --dry-run`, and needs no crate (the JSON
//! schema of `nftables` 0.6 also differs between nft releases). It is handed to
//! `nft -f -` on stdin (argv only, no shell) and applied as one transaction:
//!
//! ```text
//! table inet watchpost_quarantine         # create it if missing (no-op otherwise)
//! delete table inet watchpost_quarantine  # so this deletes an old version or the empty one
//! table inet watchpost_quarantine { … }   # the new version
//! ```
//!
//! so applying twice leaves one table, and release (`table …` + `delete table …`, again one
//! transaction) removes exactly our table whether or not it exists. Every other table is
//! untouched. A packet another table accepts is still dropped by our base chains' `policy
//! drop` (a drop in any base chain is final), so the quarantine holds whatever else is
//! loaded.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use thiserror::Error;

/// An address or network, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    pub(crate) addr: IpAddr,
    pub(crate) len: u8,
}

impl Net {
    fn family(&self) -> &'static str {
        match self.addr {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        }
    }

    fn max_len(addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// Whether `ip` lies in this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len == Net::max_len(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// One allow-list entry: a peer (address or network), optionally only one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allow {
    pub(crate) net: Net,
    /// `Some`: only TCP and UDP to this port of the peer (and the replies).
    pub(crate) port: Option<u16>,
}

/// Parses `10.0.0.5`, `10.0.0.0/24`, `10.0.0.5:514`, `fd00::5`, `fd00::/64`,
/// `[fd00::5]:443`, `[fd00::/64]:443`. Host names are refused (a firewall rule needs an
/// address, and resolving one would itself need the network being cut).
pub(crate) fn parse_allow(text: &str) -> Result<Allow, String> {
    let t = text.trim();
    let (net, port) = if let Some(rest) = t.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{t}`: `[` without `]`"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{t}`: after `]` comes `:PORT`"))?,
            ),
        };
        (inner, port)
    } else if t.matches(':').count() == 1 {
        let (a, p) = t.split_once(':').unwrap_or((t, ""));
        (a, Some(p))
    } else {
        (t, None)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("`{t}`: `{p}` is not a port (1-65535)")),
            Ok(n) => Some(n),
        },
    };
    Ok(Allow {
        net: parse_net(net).map_err(|why| format!("`{t}`: {why}"))?,
        port,
    })
}

fn parse_net(text: &str) -> Result<Net, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        format!(
            "`{addr}` is not an IPv4 or IPv6 address (host names are not allowed; write IPv6 with a port as [ADDR]:PORT)"
        )
    })?;
    let max = Net::max_len(addr);
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("`/{l}` is not a prefix length (0-{max})")),
        },
    };
    let net = Net { addr, len };
    let masked = match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0),
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0),
        )),
    };
    if masked != addr {
        return Err(format!(
            "host bits are set; the network is {}",
            Net { addr: masked, len }
        ));
    }
    Ok(net)
}

/// Whether `name` can be an nftables table name here.
pub(crate) fn valid_table(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// What the quarantine lets through.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub(crate) allow: Vec<Allow>,
    /// DNS resolvers (UDP and TCP port 53 to them is allowed).
    pub(crate) dns: Vec<IpAddr>,
    /// DHCPv4 (client 68 ↔ server 67) and DHCPv6 (546 ↔ 547).
    pub(crate) dhcp: bool,
}

/// Priority of our base chains: after conntrack (-200), before the usual filter (0).
const PRIORITY: i32 = -10;

/// The whole `nft -f -` script that (re)creates the table with `policy`.
pub(crate) fn apply_script(table: &str, policy: &Policy) -> String {
    let mut entries = policy.allow.clone();
    entries.extend(policy.dns.iter().map(|&addr| Allow {
        net: Net {
            addr,
            len: Net::max_len(addr),
        },
        port: Some(53),
    }));
    let mut input = Vec::new();
    let mut output = Vec::new();
    input.push("iif \"lo\" accept".to_owned());
    output.push("oif \"lo\" accept".to_owned());
    // IPv6 cannot reach even an allowed on-link peer without neighbour discovery.
    let nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept";
    input.push(nd.to_owned());
    output.push(nd.to_owned());
    if policy.dhcp {
        input.push("udp sport 67 udp dport 68 accept".to_owned());
        output.push("udp sport 68 udp dport 67 accept".to_owned());
        input.push("udp sport 547 udp dport 546 accept".to_owned());
        output.push("udp sport 546 udp dport 547 accept".to_owned());
    }
    for a in &entries {
        let fam = a.net.family();
        let net = a.net;
        match a.port {
            None => {
                input.push(format!("{fam} saddr {net} accept"));
                output.push(format!("{fam} daddr {net} accept"));
            }
            Some(p) => {
                input.push(format!(
                    "{fam} saddr {net} meta l4proto {{ tcp, udp }} th sport {p} ct state established accept"
                ));
                output.push(format!(
                    "{fam} daddr {net} meta l4proto {{ tcp, udp }} th dport {p} accept"
                ));
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    for (chain, rules) in [("input", &input), ("output", &output)] {
        let _ = writeln!(s, "\tchain {chain} {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook {chain} priority {PRIORITY}; policy drop;"
        );
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority {PRIORITY}; policy drop;"
    );
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The script that deletes our table (and only it), whether or not it exists.
pub(crate) fn release_script(table: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\n")
}

/// Why `nft` failed.
#[derive(Debug, Error)]
pub(crate) enum NftError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} -f - failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("talking to {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// Runs `program -f -` with `script` on stdin (one transaction: all of it or nothing).
pub(crate) fn run(program: &str, script: &str) -> Result<(), NftError> {
    let io = |source| NftError::Io {
        program: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A failed write shows in the exit status and stderr below.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(io)?;
    if out.status.success() {
        Ok(())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        stderr.truncate(stderr.floor_char_boundary(2000));
        Err(NftError::Failed {
            program: program.to_owned(),
            status: out.status,
            stderr,
        })
    }
}

/// The `nameserver` addresses of a resolv.conf text, loopback ones left out (loopback is
/// always allowed).
pub(crate) fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<Allow> {
        list.iter().map(|a| parse_allow(a).unwrap()).collect()
    }

    #[test]
    fn allow_entries_parse() {
        let a = parse_allow("10.0.0.5").unwrap();
        assert_eq!((a.net.to_string(), a.port), ("10.0.0.5".into(), None));
        let a = parse_allow("10.0.0.0/24:514").unwrap();
        assert_eq!(
            (a.net.to_string(), a.port),
            ("10.0.0.0/24".into(), Some(514))
        );
        let a = parse_allow("[fd00::5]:443").unwrap();
        assert_eq!((a.net.to_string(), a.port), ("fd00::5".into(), Some(443)));
        let a = parse_allow("[fd00::/64]").unwrap();
        assert_eq!((a.net.to_string(), a.port), ("fd00::/64".into(), None));
        let a = parse_allow("2001:db8::/32").unwrap();
        assert_eq!(a.net.to_string(), "2001:db8::/32");
        assert!(a.net.contains("2001:db8:1::9".parse().unwrap()));
        assert!(!a.net.contains("2001:db9::1".parse().unwrap()));
        assert!(!a.net.contains("10.0.0.1".parse().unwrap()));
        assert!(
            parse_allow("0.0.0.0/0")
                .unwrap()
                .net
                .contains("8.8.8.8".parse().unwrap())
        );
        for (bad, why) in [
            ("siem.example.com", "host names are not allowed"),
            ("10.0.0.5/24", "the network is 10.0.0.0/24"),
            ("10.0.0.0/33", "prefix length (0-32)"),
            ("10.0.0.5:0", "not a port"),
            ("10.0.0.5:70000", "not a port"),
            ("[fd00::5", "without `]`"),
            ("[fd00::5]443", "`:PORT`"),
            ("fd00::1/129", "0-128"),
            ("", "not an IPv4 or IPv6"),
        ] {
            let e = parse_allow(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn golden_ruleset() {
        let policy = Policy {
            allow: allow(&[
                "10.77.0.2",
                "192.0.2.0/24",
                "198.51.100.7:514",
                "fd77::2",
                "[2001:db8::/48]:443",
            ]),
            dns: vec!["10.77.0.53".parse().unwrap(), "fd77::53".parse().unwrap()],
            dhcp: true,
        };
        let expected = "\
table inet wpq
delete table inet wpq
table inet wpq {
\tchain input {
\t\ttype filter hook input priority -10; policy drop;
\t\tiif \"lo\" accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\tip saddr 10.77.0.2 accept
\t\tip saddr 192.0.2.0/24 accept
\t\tip saddr 198.51.100.7 meta l4proto { tcp, udp } th sport 514 ct state established accept
\t\tip6 saddr fd77::2 accept
\t\tip6 saddr 2001:db8::/48 meta l4proto { tcp, udp } th sport 443 ct state established accept
\t\tip saddr 10.77.0.53 meta l4proto { tcp, udp } th sport 53 ct state established accept
\t\tip6 saddr fd77::53 meta l4proto { tcp, udp } th sport 53 ct state established accept
\t}
\tchain output {
\t\ttype filter hook output priority -10; policy drop;
\t\toif \"lo\" accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
\t\tudp sport 68 udp dport 67 accept
\t\tudp sport 546 udp dport 547 accept
\t\tip daddr 10.77.0.2 accept
\t\tip daddr 192.0.2.0/24 accept
\t\tip daddr 198.51.100.7 meta l4proto { tcp, udp } th dport 514 accept
\t\tip6 daddr fd77::2 accept
\t\tip6 daddr 2001:db8::/48 meta l4proto { tcp, udp } th dport 443 accept
\t\tip daddr 10.77.0.53 meta l4proto { tcp, udp } th dport 53 accept
\t\tip6 daddr fd77::53 meta l4proto { tcp, udp } th dport 53 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority -10; policy drop;
\t}
}
";
        assert_eq!(apply_script("wpq", &policy), expected);
        assert_eq!(
            release_script("wpq"),
            "table inet wpq\ndelete table inet wpq\n"
        );
    }

    #[test]
    fn an_empty_policy_keeps_loopback_only() {
        let s = apply_script("t", &Policy::default());
        assert!(s.contains("iif \"lo\" accept"));
        assert!(!s.contains("saddr"), "{s}");
        assert!(!s.contains("udp sport 67"), "{s}");
    }

    #[test]
    fn table_names_and_resolv_conf() {
        for ok in ["watchpost_quarantine", "_t", "T1"] {
            assert!(valid_table(ok), "{ok}");
        }
        for bad in ["", "1t", "a-b", "a b", "a;b", "a\nb"] {
            assert!(!valid_table(bad), "{bad:?}");
        }
        let text = "# c\nnameserver 10.0.0.53\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_servers(text),
            [
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
